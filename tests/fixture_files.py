"""Where the tests' committed fixture files are, for test modules in any folder."""

from pathlib import Path

# config.json files as the code before the config split wrote them (old runs must keep loading)
CONFIGS = Path(__file__).parent / "fixtures" / "configs"
