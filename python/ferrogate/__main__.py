"""`python -m ferrogate ...` works like the `ferrogate` command."""

import sys

from ferrogate._ferrogate import main

sys.exit(main())
