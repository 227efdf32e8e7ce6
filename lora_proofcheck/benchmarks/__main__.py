"""`python -m lora_proofcheck.benchmarks`: one measurement process (see `worker`)."""

import sys

from .worker import main

sys.exit(main())
