"""Finding checkpoints: local files, or the official files on the Hugging Face hub (through
``huggingface_hub``: its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and revisions)."""

from __future__ import annotations

import os
from pathlib import Path

from sam2kit.configs import SAM2Config
from sam2kit.errors import CheckpointNotFoundError


def how_to_get(config: SAM2Config) -> str:
    return (
        f"get it on a machine with internet access with "
        f"`hf download {config.hub_id} {config.checkpoint_file}` (`huggingface-cli download` with "
        f"older huggingface_hub), copy the Hugging Face cache "
        f"(~/.cache/huggingface) here, or pass the file's path as the checkpoint"
    )


def download_checkpoint(config: SAM2Config, revision: str | None = None) -> Path:
    """Path of ``config``'s official checkpoint in the hub cache, downloading it if needed."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(config.hub_id, config.checkpoint_file, revision=revision))
    except LocalEntryNotFoundError as e:
        from huggingface_hub import constants

        offline = bool(getattr(constants, "HF_HUB_OFFLINE", False)) or (
            os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"))
        why = "offline mode (HF_HUB_OFFLINE) is on" if offline else "the hub could not be reached"
        raise CheckpointNotFoundError(
            f"checkpoint {config.checkpoint_file} of {config.hub_id} is not in the local cache and "
            f"{why}; {how_to_get(config)}"
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointNotFoundError(
            f"revision {revision!r} of {config.hub_id} does not exist on the hub; "
            "leave the revision out for the latest one"
        ) from e
    except EntryNotFoundError as e:
        raise CheckpointNotFoundError(
            f"{config.hub_id} has no file {config.checkpoint_file} at revision {revision or 'main'}; "
            "pass a local checkpoint path instead"
        ) from e
    except RepositoryNotFoundError as e:
        raise CheckpointNotFoundError(
            f"the hub has no repository {config.hub_id} (or it needs a login: set HF_TOKEN); "
            f"{how_to_get(config)}"
        ) from e
    except HfHubHTTPError as e:
        raise CheckpointNotFoundError(
            f"downloading {config.hub_id}/{config.checkpoint_file} failed: {e}; {how_to_get(config)}"
        ) from e


def cached_checkpoint(config: SAM2Config) -> Path | None:
    """The cached file of ``config``'s checkpoint, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(config.hub_id, config.checkpoint_file)
    return Path(found) if isinstance(found, str) else None
