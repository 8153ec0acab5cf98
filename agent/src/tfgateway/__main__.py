"""`python -m tfgateway` = the `tfgateway` command."""

from tfgateway.cli import main

raise SystemExit(main())
