"""Platform connectors: one sub-package per channel, each implementing ``Connector``."""
