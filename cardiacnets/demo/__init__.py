"""The end-to-end demo: `run_demo` (simulate → preprocess → train → evaluate → report)."""

from cardiacnets.demo.config import DemoConfig, EvaluationConfig, StageConfig
from cardiacnets.demo.run import DemoRun, load_demo_config, run_demo

__all__ = ["DemoConfig", "DemoRun", "EvaluationConfig", "StageConfig", "load_demo_config", "run_demo"]
