"""Benchmark of the invoke path; prints JSON. Same as `lamina bench`.

.venv/bin/python bench/invoke.py [--warm 2000] [--concurrency 16] [--cold 100]
"""

import sys

from lamina.bench import main

sys.exit(main())
