import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def tiny_pack(tmp_path: Path) -> Path:
    """A 64x64 synthetic pack: 'covid' images carry bright blobs, others do not."""
    rng = np.random.default_rng(0)
    blobs, labels, sources, splits, names = [], [], [], [], []
    for i in range(48):
        y = i % 2
        img = rng.normal(60, 10, (64, 64))
        if y:
            cy, cx = rng.integers(16, 48, 2)
            img[cy - 6:cy + 6, cx - 6:cx + 6] += 120
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue()); labels.append(y)
        sources.append("ct16" if i >= 44 else "mosmed"); splits.append("heldout" if 36 <= i < 44 else "train")
        names.append(f"img{i}.jpg")
    p = tmp_path / "pack.npz"
    np.savez(p, blob=np.frombuffer(b"".join(blobs), dtype=np.uint8), lens=np.array([len(b) for b in blobs]),
             label=np.array(labels), source=np.array(sources), split=np.array(splits), name=np.array(names))
    return p


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    src = (Path(__file__).parents[1] / "configs" / "fpn256.toml").read_text()
    src = src.replace("input_size = 256", "input_size = 64").replace("epochs = 100", "epochs = 2") \
             .replace("batch = 64", "batch = 8").replace("warmup_epochs = 0", "warmup_epochs = 1")
    p = tmp_path / "tiny.toml"
    p.write_text(src)
    return p
