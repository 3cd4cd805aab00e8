# Sourced by scripts/demo and scripts/serve (after scripts/setup): sets $model to the weights to
# use for sam2-hiera-tiny: $SAM2KIT_CHECKPOINT if set, else the official file from the Hugging
# Face hub or its cache; where neither can be had (no internet, empty cache), it says so and
# makes a RANDOMLY INITIALISED checkpoint in out/, so that everything runs (the masks then mean
# nothing).
model=facebook/sam2-hiera-tiny
if [ -n "${SAM2KIT_CHECKPOINT:-}" ]; then
  model=$SAM2KIT_CHECKPOINT
elif ! .venv/bin/python - <<'PY'
import os, socket, sys
# only ask the hub when it answers quickly; otherwise use the cache alone
try:
    socket.create_connection(("huggingface.co", 443), timeout=3).close()
except OSError:
    os.environ["HF_HUB_OFFLINE"] = "1"
from sam2kit import CheckpointNotFoundError, get_config
from sam2kit.hub import download_checkpoint
try:
    download_checkpoint(get_config("sam2-hiera-tiny"))
except CheckpointNotFoundError as e:
    print(f"note: {e}", file=sys.stderr)
    sys.exit(1)
PY
then
  ckpt=out/random-sam2-hiera-tiny.pt
  echo "note: the official sam2-hiera-tiny weights cannot be had here; using a RANDOMLY" >&2
  echo "      INITIALISED checkpoint ($ckpt): the masks show the pipeline, not real" >&2
  echo "      segmentations. Give real weights with SAM2KIT_CHECKPOINT=/path/to/sam2_hiera_tiny.pt" >&2
  mkdir -p out
  [ -f "$ckpt" ] || .venv/bin/python scripts/make_random_checkpoint.py sam2-hiera-tiny "$ckpt"
  model=$ckpt
fi
