"""Studies: models × explainers × datasets × metrics, run resumably into a results store."""

from .config import StudyConfig, load_config
from .runner import run_study
from .store import ResultsStore

__all__ = ["ResultsStore", "StudyConfig", "load_config", "run_study"]
