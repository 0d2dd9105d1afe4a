"""Training: the typed run config, the stages as task objects, the one Accelerate loop and checkpoints.

``cardiacnets train CONFIG`` calls `train`; see `cardiacnets.train.loop` for the
run folder layout and `cardiacnets.train.tasks` for the stages.
"""

from cardiacnets.train.config import TrainConfig
from cardiacnets.train.loop import TrainResult, train
from cardiacnets.train.tasks import TASKS, Task, get_task_class, register_task

__all__ = ["TASKS", "Task", "TrainConfig", "TrainResult", "get_task_class", "register_task", "train"]
