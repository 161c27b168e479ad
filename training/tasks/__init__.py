"""The trainable tasks. Importing this package registers every task (one import per task)."""

from training.tasks import av_sync  # noqa: F401
from training.tasks import captioning  # noqa: F401
from training.tasks import classification  # noqa: F401
from training.tasks import invariance  # noqa: F401
from training.tasks import retrieval  # noqa: F401
from training.tasks import shared_autoencoder  # noqa: F401
from training.tasks.base import Task
from training.tasks.registry import get_task
from training.tasks.registry import register
from training.tasks.registry import task_names
