import sys
from pathlib import Path

# Tests import their model builders as a plain module.
sys.path.insert(0, str(Path(__file__).parent))
