"""Drop-in for ``torch.ao.pruning._experimental.data_scheduler``, plus ready-made schedulers."""

from fsparse.data_scheduler.base_data_scheduler import BaseDataScheduler
from fsparse.data_scheduler.sl_schedulers import (
    CubicSLScheduler,
    LambdaSLScheduler,
    StepSLScheduler,
)

__all__ = ["BaseDataScheduler", "CubicSLScheduler", "LambdaSLScheduler", "StepSLScheduler"]
