#!/usr/bin/env python3
"""moto's S3-compatible server for the capture tests: moto_server.py HOST PORT."""

import sys

from moto.server import main

main(["-H", sys.argv[1], "-p", sys.argv[2]])
