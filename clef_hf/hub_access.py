"""Clear errors for checkpoints that cannot be fetched from the Hugging Face Hub.

transformers reports a missing network and offline mode with generic `OSError`s (for a processor, one that only
talks about a missing `preprocessor_config.json`). CLEF's loaders re-raise them with the cause and the way out.
"""

import os

from huggingface_hub import constants


def explain_hub_failure(name_or_path: str, error: OSError) -> OSError:
    """An `OSError` saying why `name_or_path` could not be loaded, or `error` itself if it is not about the Hub.

    A local folder's errors are returned unchanged; for a Hub id, the message names the id, whether offline mode is on,
    and the cache that was searched.
    """
    name = str(name_or_path)
    if os.path.isdir(name):
        return error
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:  # meant as a path, not as an "org/name" Hub id
        return OSError(f"There is no folder {name!r} (and it is not a Hub id of the form 'org/name').")
    cache = constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        cause = "offline mode is on (HF_HUB_OFFLINE=1)"
    else:
        cause = "the Hugging Face Hub could not be reached (no network?)"
    return OSError(
        f"Could not load {name_or_path!r}: {cause}, and it is not in the local cache {cache}. Download it once with "
        f"network access (e.g. `huggingface-cli download {name_or_path}`), or pass the path of a local folder. "
        f"Original error: {error}"
    )


__all__ = ["explain_hub_failure"]
