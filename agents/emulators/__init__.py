"""Local servers that behave like the services agents talk to, for development and tests."""
