"""What the PyInstaller build of Concord bundles; read by ``concord.spec`` and the tests.

Plain data and the standard library only (no PyInstaller import), so that the
lists can be checked without building.  Paths are relative to the repository
root; bundle destinations are relative to the bundle folder (``sys._MEIPASS``,
``dist/concord/_internal``), where :func:`app.demo.resources_root` and
:data:`app.storage.engine.MIGRATIONS` look for them in the frozen app.
"""

from __future__ import annotations

import ast
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The script PyInstaller freezes: calls ``app.cli:main`` (the ``concord`` console script).
ENTRY = "installers/concord_entry.py"
#: The executable's name (``concord``, ``concord.exe``; ``Concord.app`` on macOS).
NAME = "concord"
#: The windowed twin on Windows (no console window; the desktop shortcut's target).
WINDOWED_NAME_WINDOWS = "concordw"
APP_BUNDLE_NAME = "Concord.app"

#: Folders copied file by file: (source in the repository, destination in the bundle).
DATA_DIRS: tuple[tuple[str, str], ...] = (
    # the demo model and the demo worklist (app/demo.py: RESOURCES / "models" | "demo")
    ("resources/models/concord-tiny-demo", "resources/models/concord-tiny-demo"),
    ("resources/demo", "resources/demo"),
    # Alembic reads env.py, script.py.mako and versions/*.py from disk
    # (app/storage/engine.py: MIGRATIONS beside engine.py)
    ("app/storage/migrations", "app/storage/migrations"),
)
#: Copied when the repository has them (package data named in pyproject.toml).
OPTIONAL_DATA_DIRS: tuple[tuple[str, str], ...] = (
    ("core_model/text/data", "core_model/text/data"),
)
#: Never copied from the folders above.
SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ipynb_checkpoints"})
SKIP_SUFFIXES = frozenset({".pyc", ".pyo"})

#: Packages whose every submodule is bundled (imported by name at run time).
SUBMODULE_PACKAGES: tuple[str, ...] = (
    "app",  # app.settings / app.admin import their Qt parts by name
    "core_model",
    "training",
    "timm.models",  # the model registry fills as the model modules import
    "transformers.models.bert",  # transformers imports its models lazily
    "pydicom.pixels",  # pixel data decoders and encoders chosen by transfer syntax
    "highdicom",
    "keyring.backends",
    "alembic.ddl",  # the per-dialect migration implementations
)

#: Modules nothing imports statically but the application needs.
HIDDEN_IMPORTS: tuple[str, ...] = (
    # SQLAlchemy dialects named by URL: sqlite:/// (default), postgresql+psycopg://
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.postgresql.psycopg",
    "psycopg",
    "psycopg_binary",
    "psycopg_binary.pq",
    "psycopg_binary._psycopg",
    # Alembic's proxy modules, imported by the migration scripts on disk
    "alembic.context",
    "alembic.op",
    "alembic.runtime.migration",
    "alembic.script",
    "mako.template",
    # pylibjpeg plugins (also found through their entry points, below)
    "pylibjpeg",
    "libjpeg",
    "openjpeg",
    "jpeg_ls",
    # matplotlib: colormaps for heatmaps, the Agg canvas for concord eval's plots
    "matplotlib.backends.backend_agg",
    # torch_geometric: the GCN of the report-graph encoder
    "torch_geometric.nn.conv.gcn_conv",
    "jinja2",
)

#: Entry-point groups whose plugins the frozen app must find (modules + their
#: distributions' metadata, so that importlib.metadata.entry_points() lists them).
ENTRY_POINT_GROUPS: tuple[str, ...] = (
    "pylibjpeg.jpeg_decoders",
    "pylibjpeg.jpeg_2000_decoders",
    "pylibjpeg.jpeg_ls_decoders",
    "pylibjpeg.jpeg_xt_decoders",
    "pylibjpeg.pixel_data_decoders",
    "pylibjpeg.pixel_data_encoders",
    "keyring.backends",
)

#: Distributions whose metadata the frozen app reads (versions, plugins); a
#: distribution that is not installed is skipped with a warning.
METADATA: tuple[str, ...] = (
    "concord",  # concord --version
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pyjpegls",
    "highdicom",
    "keyring",
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "torch-geometric",
    "SQLAlchemy",
    "alembic",
    "psycopg",
    "psycopg-binary",
    "platformdirs",
)

#: Packages whose shared libraries are loaded by path, not imported: torchvision's op
#: libraries (``_C.so`` up to 0.28, ``_C_stable.so`` / ``image_stable.so`` from 0.29,
#: loaded with ``torch.ops.load_library``; PyInstaller's hook names only ``torchvision._C``).
DYNAMIC_LIB_PACKAGES: tuple[str, ...] = ("torchvision",)
#: Their file names (PyInstaller's default, ``lib*.so``, misses ``_C_stable.so``).
DYNAMIC_LIB_PATTERNS: tuple[str, ...] = ("*.so", "*.pyd", "*.dll", "*.dylib")

#: Non-Python files of installed packages: (package, glob patterns).
PACKAGE_DATA: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch_geometric", ("**/*.jinja",)),  # MessagePassing renders propagate() from these
)

#: Packages kept as source beside the archive (they read their own source at run time).
MODULE_COLLECTION_MODE: dict[str, str] = {
    "torch_geometric": "pyz+py",  # inspect.getsource() of the conv classes
}

#: Never bundled: test suites, other GUI toolkits, notebooks, optional heavy extras.
EXCLUDES: tuple[str, ...] = (
    "tkinter",
    "_tkinter",
    "turtle",
    "turtledemo",
    "idlelib",
    "lib2to3",
    "pytest",
    "_pytest",
    "pytestqt",
    "IPython",
    "ipykernel",
    "jupyter_client",
    "notebook",
    "sphinx",
    "tensorboard",
    "torch.utils.tensorboard",
    "matplotlib.backends.backend_tkagg",
    "matplotlib.backends._backend_tk",
    "matplotlib.backends.backend_webagg",
    "matplotlib.backends.backend_nbagg",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "google.genai",  # the opt-in Gemini backend is not part of the desktop build
    "tests",
    # downloads: Concord never fetches models (huggingface_hub and fsspec import these lazily)
    "hf_xet",
    "aiohttp",
    # Hugging Face's `kernels` fetches compute kernels from the Hub; transformers (>= 5)
    # imports it only when installed, and frozen without its data files it fails at
    # import ("Cannot load dependency data"), taking every model load with it
    "kernels",
    # torch.compile's GPU kernel compiler (1 GB in the GPU variant); Concord runs eager
    # PyTorch, and torch imports triton only behind has_triton() checks
    "triton",
)

#: transformers' model families kept: Concord builds ``BertConfig`` / ``BertModel``
#: (``core_model/model/encoders.py``).  transformers names all ~550 families in
#: ``if TYPE_CHECKING`` imports, so PyInstaller would otherwise bundle every one.
TRANSFORMERS_MODELS_KEPT = frozenset({"auto", "bert"})

#: Bundle folders left out: torch's C++ test programs (``torch/test``, ``torch/bin``).
DROPPED_FOLDERS: tuple[str, ...] = ("torch/test/", "torch/bin/")
#: ... except these files in them.
KEPT_FILES = frozenset({"torch/bin/torch_shm_manager"})  # tensors shared between processes
#: Single files left out: the build machine's CUDA runtime, which PyInstaller finds through
#: ``ctypes.CDLL("libcudart.so")`` in a deprecated transformers helper (it falls back to
#: ``torch.version.cuda``); torch's own CUDA runtime is the versioned ``libcudart.so.NN``.
DROPPED_FILES = frozenset({"libcudart.so"})


def keep_module(name: str) -> bool:
    """Whether the Python module ``name`` goes into the bundle."""
    parts = name.split(".")
    if parts[:2] == ["transformers", "models"] and len(parts) > 2:
        return parts[2] in TRANSFORMERS_MODELS_KEPT
    return True


def keep_file(dest: str) -> bool:
    """Whether the bundle file at ``dest`` (relative to the bundle folder) is kept."""
    dest = dest.replace("\\", "/")
    if dest in KEPT_FILES:
        return True
    if dest in DROPPED_FILES:
        return False
    if any(dest.startswith(folder) for folder in DROPPED_FOLDERS):
        return False
    parts = dest.split("/")
    if parts[:2] == ["transformers", "models"] and len(parts) > 3:
        return parts[2] in TRANSFORMERS_MODELS_KEPT
    return True


def project_version(root: Path = ROOT) -> str:
    """The ``version`` of ``pyproject.toml``."""
    with open(root / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def data_dirs(root: Path = ROOT) -> list[tuple[str, str]]:
    """The folders to copy: every required one, and the optional ones that exist."""
    return list(DATA_DIRS) + [(s, d) for s, d in OPTIONAL_DATA_DIRS if (root / s).is_dir()]


def data_files(root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """``(source file, destination folder)`` pairs in PyInstaller's ``datas`` form.

    Raises FileNotFoundError when a required folder is missing or empty.
    """
    for src, dest in data_dirs(root):
        base = root / src
        if not base.is_dir():
            raise FileNotFoundError(f"bundled folder missing: {base}")
        found = False
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            rel = Path(dirpath).relative_to(base)
            for name in sorted(filenames):
                if Path(name).suffix in SKIP_SUFFIXES:
                    continue
                found = True
                yield str(Path(dirpath) / name), str(Path(dest) / rel)
        if not found:
            raise FileNotFoundError(f"bundled folder is empty: {base}")


def migration_imports(root: Path = ROOT) -> list[str]:
    """Modules the Alembic scripts import: PyInstaller does not analyse data files."""
    names: set[str] = set()
    for path in sorted((root / "app/storage/migrations").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module != "__future__":
                    names.add(node.module)  # "from alembic import op": op is in HIDDEN_IMPORTS
    return sorted(names)
