#!/bin/sh
# Container entrypoint: every argument goes to the flowbiz CLI (serve, check, --help, …).
set -eu
exec flowbiz "$@"
