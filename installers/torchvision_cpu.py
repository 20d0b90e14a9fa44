"""Make the PyPI torchvision importable on a CPU-only torch (the CPU variant's build).

PyPI publishes torchvision for CUDA only.  Its C++ ops (``_C.so``, ``image.so``)
link ``libtorch_cuda.so``, which a CPU build of torch does not have, so they do
not load; torchvision then dies at import because ``_meta_registrations.py``
registers fake kernels for ``torchvision::nms`` / ``qnms`` without checking
that the ops exist ("operator torchvision::nms does not exist"; every release
from 0.18 to 0.29 does this).  Concord uses none of those ops: timm needs
torchvision's Python transforms only.

Run with the build environment's Python after installing torch (CPU) and the
matching torchvision (torch 2.13 <-> torchvision 0.28):

    python installers/torchvision_cpu.py

It (1) guards the two registrations with ``torchvision.extension._has_ops()``,
(2) removes the shared objects that link torch's CUDA library, and then the
CUDA libraries bundled for them (they can never load here; PyInstaller would
otherwise try to follow their missing dependencies; a real CPU build of
torchvision keeps its ops), then (3) checks that ``import torchvision``,
``timm.create_model("resnet18")`` and a forward pass work.  It refuses to run on
a torch with CUDA.  Running it twice changes nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

UNGUARDED = '@torch.library.register_fake("torchvision::'
GUARDED = (
    "@(torch.library.register_fake if torchvision.extension._has_ops() "
    'else (lambda *a, **k: (lambda f: f)))("torchvision::'
)
#: torchvision's native parts that link libtorch_cuda (and the CUDA libraries they bring).
NATIVE_GLOBS = ("_C*.so", "image*.so", "_C*.pyd", "image*.pyd")
CHECK = """
import torch, torchvision, timm
assert torch.version.cuda is None, torch.version.cuda
m = timm.create_model("resnet18", pretrained=False).eval()
with torch.no_grad():
    y = m(torch.zeros(1, 3, 64, 64))
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}: resnet18 -> {tuple(y.shape)}")
"""


def patch_source(text: str) -> tuple[str, int]:
    """``text`` with every unguarded fake registration guarded, and how many were changed."""
    count = text.count(UNGUARDED)
    return text.replace(UNGUARDED, GUARDED), count


def needs_cuda_torch(path: Path) -> bool:
    """Whether a native module links torch's CUDA library (a CPU torch cannot load it)."""
    data = path.read_bytes()
    return b"libtorch_cuda.so" in data or b"torch_cuda.dll" in data


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"torchvision_cpu: {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def main() -> int:
    torch_dir = package_dir("torch")
    if any(torch_dir.joinpath("lib").glob("libtorch_cuda*")):
        print("torchvision_cpu: this torch has CUDA; nothing to do", file=sys.stderr)
        return 2
    tv = package_dir("torchvision")
    meta = tv / "_meta_registrations.py"
    text, count = patch_source(meta.read_text(encoding="utf-8"))
    if count:
        meta.write_text(text, encoding="utf-8")
        for cached in (tv / "__pycache__").glob("_meta_registrations.*.pyc"):
            cached.unlink()
    elif GUARDED not in text:
        print(f"torchvision_cpu: {meta} has no registration to guard; check this "
              "torchvision version by hand", file=sys.stderr)
    removed = []
    native = [path for pattern in NATIVE_GLOBS for path in tv.glob(pattern)]
    for path in native:
        if needs_cuda_torch(path):
            path.unlink()
            removed.append(path.name)
    libs = tv.parent / "torchvision.libs"
    if removed and len(removed) == len(native) and libs.is_dir():
        shutil.rmtree(libs)  # only the removed objects used these
        removed.append(libs.name + "/")
    print(f"torchvision_cpu: guarded {count} registration(s); removed {removed or 'nothing'}")
    done = subprocess.run([sys.executable, "-c", CHECK], check=False)
    if done.returncode:
        print("torchvision_cpu: torchvision / timm still fail on this torch", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
