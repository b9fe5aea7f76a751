import os
import sys

# Let tests import tests/contract.py and the helper scripts as plain modules.
sys.path.insert(0, os.path.dirname(__file__))
