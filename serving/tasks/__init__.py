"""The serving side of every task but classification, keyed by the config's `task:`.

| `task:`              | module                          | signatures                                  |
|----------------------|---------------------------------|---------------------------------------------|
| `retrieval`          | `serving/tasks/retrieval.py`    | `embed_<m>` per modality, `similarity`      |
| `captioning`         | `serving/tasks/captioning.py`   | `generate` (ids + strings), `generate_ids`  |
| `av_sync`            | `serving/tasks/av_sync.py`      | `serving_default` (offsets, in-sync prob.)  |
| `shared_autoencoder` | `serving/tasks/shared_autoencoder.py` | `serving_default`, `serve_<m>_only`   |
| `invariance`         | `serving/tasks/invariance.py`   | `serving_default`, `serve_<m>_only`         |

Classification keeps its own modules (`serving/serving_module.py`, `serving/parity.py`).
`serving/task_export.py` exports and checks a model directory of these tasks.
"""

from serving.tasks.av_sync import AVSyncServing
from serving.tasks.base import TaskServing
from serving.tasks.captioning import CaptioningServing
from serving.tasks.invariance import InvarianceServing
from serving.tasks.retrieval import RetrievalServing
from serving.tasks.shared_autoencoder import SharedAutoencoderServing

TASK_SERVING = {cls.task: cls for cls in (
    RetrievalServing, CaptioningServing, AVSyncServing, SharedAutoencoderServing,
    InvarianceServing)}


def task_serving(config, model, model_dir):
    """The `TaskServing` of a model directory's task (ValueError naming the known ones)."""
    if config.task not in TASK_SERVING:
        raise ValueError(f"No serving module for task {config.task!r}; tasks served: "
                         f"classification, {', '.join(sorted(TASK_SERVING))}.")
    return TASK_SERVING[config.task](config, model, model_dir)


__all__ = ["TASK_SERVING", "TaskServing", "task_serving"]
