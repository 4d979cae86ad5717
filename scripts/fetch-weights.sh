#!/usr/bin/env bash
# Downloads torchvision's ImageNet ResNet18 weights (IMAGENET1K_V1) to weights/,
# where cxr's recipes look for them (recipes/seed.toml: weights/resnet18-f37072fd.pth).
# Run it on a machine with internet access; copy weights/ over otherwise.
#
# torchvision names the file after the first 8 hex digits of its SHA-256, and
# torch.hub verifies exactly that prefix: so does this script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${CXR_WEIGHTS_DIR:-$ROOT/weights}"
NAME="resnet18-f37072fd.pth"
URL="https://download.pytorch.org/models/$NAME"
PREFIX="f37072fd"
mkdir -p "$DEST"
if [[ -f "$DEST/$NAME" ]] && sha256sum "$DEST/$NAME" | grep -q "^$PREFIX"; then
    echo "already there: $DEST/$NAME"
    exit 0
fi
tmp="$DEST/$NAME.part"
if ! curl -fL --retry 2 --connect-timeout 20 -o "$tmp" "$URL"; then
    rm -f "$tmp"
    echo "error: could not download $URL." >&2
    echo "This machine has no access to download.pytorch.org. On a machine with internet access run" >&2
    echo "  scripts/fetch-weights.sh" >&2
    echo "(or: python -c 'import torchvision; torchvision.models.resnet18(weights=\"IMAGENET1K_V1\")' and copy" >&2
    echo "~/.cache/torch/hub/checkpoints/$NAME), then copy the file to $DEST/$NAME." >&2
    echo "timm's resnet18.tv_in1k model.safetensors works too: cxr train --pretrained FILE.safetensors" >&2
    exit 1
fi
sum=$(sha256sum "$tmp" | cut -d' ' -f1)
if [[ "$sum" != $PREFIX* ]]; then
    rm -f "$tmp"
    echo "error: SHA-256 of the download is $sum, expected it to start with $PREFIX" >&2
    exit 1
fi
mv "$tmp" "$DEST/$NAME"
echo "ok: $DEST/$NAME (sha256 $sum)"
