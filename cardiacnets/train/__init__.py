"""Training: the typed run config, the stages as task objects, the one Accelerate loop and checkpoints.

``cardiacnets train CONFIG`` calls `train`; see `cardiacnets.train.loop` for the
run folder layout and `cardiacnets.train.tasks` for the stages. Importing this
package registers every stage: the task modules below register their tasks
with `register_task` when imported.
"""

from cardiacnets.train.config import TrainConfig
from cardiacnets.train.loop import TrainResult, train
from cardiacnets.train.tasks import TASKS, Task, get_task_class, register_task

# Import-time registration of the stages defined outside `tasks` (pretrain_ecg, pretrain_cmr, align are in it).
from cardiacnets.train import (  # noqa: E402,F401  (isort: skip)
    anatomy_image_task, anatomy_task, diffusion_task, heads_task, segment_task, vae_task,
)

__all__ = ["TASKS", "Task", "TrainConfig", "TrainResult", "get_task_class", "register_task", "train"]
