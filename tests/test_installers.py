"""Cheap checks of the PyInstaller build (installers/): nothing here builds the installer.

The spec is executed with PyInstaller's build classes replaced by recorders, the
bundle layout is rebuilt from the spec's data list (as links) and the
application's path resolution is run against it with a faked ``sys._MEIPASS``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALLERS = ROOT / "installers"


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle() -> types.ModuleType:
    return _load("concord_installers_bundle", INSTALLERS / "bundle.py")


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A running 'frozen' program whose bundle folder is ``tmp_path / "bundle"``."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(folder), raising=False)
    return folder


def _lay_out(bundle: types.ModuleType, folder: Path) -> None:
    """The bundle's data files as PyInstaller places them (symbolic links, not copies)."""
    for src, dest in bundle.data_files():
        target = folder / dest / Path(src).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(src)


# ------------------------------------------------------------------------ the bundle list


def test_every_bundled_file_exists_in_the_repository(bundle: types.ModuleType) -> None:
    files = list(bundle.data_files())
    assert files
    for src, dest in files:
        path = Path(src)
        assert path.is_file(), src
        assert ROOT in path.parents, src
        assert "__pycache__" not in path.parts and path.suffix != ".pyc", src
        assert not Path(dest).is_absolute(), dest
    by_dest = {str(Path(dest) / Path(src).name) for src, dest in files}
    for needed in (
        "resources/models/concord-tiny-demo/model.safetensors",
        "resources/models/concord-tiny-demo/config.json",
        "resources/models/concord-tiny-demo/tokenizer/tokenizer.json",
        "resources/demo/worklist.json",
        "resources/demo/study-01/draft.txt",
        "app/storage/migrations/env.py",
        "app/storage/migrations/script.py.mako",
    ):
        assert needed in by_dest, needed
    versions = sorted((ROOT / "app/storage/migrations/versions").glob("*.py"))
    assert versions
    for version in versions:
        assert f"app/storage/migrations/versions/{version.name}" in by_dest
    for src, _ in bundle.data_dirs():
        assert (ROOT / src).is_dir(), src


def test_a_missing_or_empty_required_folder_is_an_error(
    bundle: types.ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        list(bundle.data_files(tmp_path))
    for src, _ in bundle.DATA_DIRS:
        (tmp_path / src).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="empty"):
        list(bundle.data_files(tmp_path))


def test_optional_folders_are_bundled_only_when_present(
    bundle: types.ModuleType, tmp_path: Path
) -> None:
    for src, _ in bundle.DATA_DIRS:
        (tmp_path / src).mkdir(parents=True)
        (tmp_path / src / "f.txt").write_text("x")
    assert bundle.data_dirs(tmp_path) == list(bundle.DATA_DIRS)
    src, dest = bundle.OPTIONAL_DATA_DIRS[0]
    (tmp_path / src).mkdir(parents=True)
    (tmp_path / src / "words.json").write_text("{}")
    (tmp_path / src / "__pycache__").mkdir()
    (tmp_path / src / "__pycache__" / "x.pyc").write_bytes(b"")
    files = list(bundle.data_files(tmp_path))
    assert (str(tmp_path / src / "words.json"), dest) in files
    assert not any(s.endswith(".pyc") for s, _ in files)


def test_named_modules_and_plugins_exist(bundle: types.ModuleType) -> None:
    """A typo in a hidden import or an entry-point group would only warn at build time."""
    import psycopg  # noqa: F401 - psycopg_binary refuses to be imported before it
    for name in (*bundle.HIDDEN_IMPORTS, *bundle.SUBMODULE_PACKAGES, *bundle.migration_imports()):
        assert importlib.util.find_spec(name) is not None, name
    for group in bundle.ENTRY_POINT_GROUPS:
        assert importlib.metadata.entry_points(group=group), group
    installed = {d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}
    for dist in bundle.METADATA:
        assert dist.lower() in installed, dist
    assert {"app.storage.models", "alembic"} <= set(bundle.migration_imports())
    assert "tkinter" in bundle.EXCLUDES


def test_pruning_keeps_what_concord_runs(bundle: types.ModuleType) -> None:
    keep_module, keep_file = bundle.keep_module, bundle.keep_file
    assert keep_module("transformers.models.bert.modeling_bert")
    assert keep_module("transformers.models.auto.configuration_auto")
    assert keep_module("transformers.models") and keep_module("transformers.modeling_utils")
    assert not keep_module("transformers.models.llama.modeling_llama")
    assert keep_module("torch.testing") and keep_module("timm.models.resnet")
    assert keep_file("transformers/models/bert/modeling_bert.py")
    assert keep_file("transformers/models/__init__.py")
    assert not keep_file("transformers/models/whisper/modeling_whisper.py")
    assert not keep_file("torch/test/Dict_test") and not keep_file("torch/bin/test_jit")
    assert keep_file("torch/bin/torch_shm_manager") and keep_file("torch\\bin\\torch_shm_manager")
    assert keep_file("torch/lib/libtorch_cpu.so") and keep_file("resources/demo/worklist.json")
    assert not keep_file("libcudart.so") and keep_file("nvidia/cu13/lib/libcudart.so.13")
    for src, dest in bundle.data_files():
        assert keep_file(str(Path(dest) / Path(src).name)), src


def test_spec_prunes_the_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    pure = [("transformers.models.bert.modeling_bert", "p", "PYMODULE"),
            ("transformers.models.llama", "p", "PYMODULE"), ("torch", "p", "PYMODULE")]
    binaries = [("torch/bin/test_api", "p", "BINARY"), ("torch/lib/libc10.so", "p", "BINARY")]
    calls = _run_spec(monkeypatch, "linux", pure=pure, binaries=binaries)
    (pyz_args, _), = _of(calls, "PYZ")
    assert [e[0] for e in pyz_args[0]] == ["transformers.models.bert.modeling_bert", "torch"]
    (collect_args, _), = _of(calls, "COLLECT")
    assert [("torch/lib/libc10.so", "p", "BINARY")] in collect_args


def test_version_is_the_projects(bundle: types.ModuleType) -> None:
    assert bundle.project_version() == importlib.metadata.version("concord")


# ------------------------------------------------------------------------ the spec


class _Recorder:
    def __init__(self, kind: str, calls: list[tuple[str, tuple, dict]], **toc: list):
        self.kind, self.calls, self.toc = kind, calls, toc

    def __call__(self, *args, **kwargs):
        self.calls.append((self.kind, args, kwargs))
        return types.SimpleNamespace(kind=self.kind, args=args, kwargs=kwargs,
                                     scripts=["scripts"], **self.toc)


def _run_spec(
    monkeypatch: pytest.MonkeyPatch, platform: str, *, pure: list | None = None,
    binaries: list | None = None,
) -> list[tuple[str, tuple, dict]]:
    calls: list[tuple[str, tuple, dict]] = []
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda package: [f"{package}.collected"]
    hooks.collect_entry_point = lambda group: ([(f"meta/{group}", ".")], [f"plugin.{group}"])
    hooks.copy_metadata = lambda dist: [(f"{dist}.dist-info", f"{dist}.dist-info")]
    hooks.collect_data_files = lambda package, includes=None: [(f"{package}/x", package)]
    hooks.collect_dynamic_libs = lambda package, search_patterns: (
        [(f"{package}/_C_stable.so", package)] if "*.so" in search_patterns else [])
    hooks.logger = types.SimpleNamespace(warning=lambda *a, **k: None)
    pyinstaller = types.ModuleType("PyInstaller")
    utils = types.ModuleType("PyInstaller.utils")
    for name, module in (("PyInstaller", pyinstaller), ("PyInstaller.utils", utils),
                         ("PyInstaller.utils.hooks", hooks)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "bundle", raising=False)
    namespace = {"SPECPATH": str(INSTALLERS), "__file__": str(INSTALLERS / "concord.spec")}
    for kind in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"):
        namespace[kind] = _Recorder(kind, calls)
    namespace["Analysis"].toc = {"pure": list(pure or []), "binaries": list(binaries or []),
                                 "datas": []}
    code = compile((INSTALLERS / "concord.spec").read_text(encoding="utf-8"), "concord.spec", "exec")
    exec(code, namespace)  # noqa: S102 - the spec is Python run by PyInstaller the same way
    sys.modules.pop("bundle", None)
    return calls


def _of(calls: list[tuple[str, tuple, dict]], kind: str) -> list[tuple[tuple, dict]]:
    return [(args, kwargs) for k, args, kwargs in calls if k == kind]


def test_spec_analysis_gets_the_data_imports_and_excludes(
    monkeypatch: pytest.MonkeyPatch, bundle: types.ModuleType
) -> None:
    calls = _run_spec(monkeypatch, "linux")
    (args, kwargs), = _of(calls, "Analysis")
    entry = Path(args[0][0])
    assert entry == ROOT / bundle.ENTRY and entry.is_file()
    datas = kwargs["datas"]
    for pair in bundle.data_files():
        assert pair in datas
    assert ("meta/pylibjpeg.pixel_data_decoders", ".") in datas  # entry-point metadata
    assert ("concord.dist-info", "concord.dist-info") in datas  # concord --version
    assert ("torch_geometric/x", "torch_geometric") in datas  # the .jinja templates
    hidden = set(kwargs["hiddenimports"])
    assert {
        "sqlalchemy.dialects.sqlite.pysqlite",
        "sqlalchemy.dialects.postgresql.psycopg",
        "alembic.context",
        "alembic.op",
        "app.storage.models",
        "app.collected",
        "timm.models.collected",
        "plugin.pylibjpeg.pixel_data_decoders",
        "plugin.keyring.backends",
        "matplotlib.backends.backend_agg",
    } <= hidden
    assert ("torchvision/_C_stable.so", "torchvision") in kwargs["binaries"]  # op libraries
    assert "tkinter" in kwargs["excludes"] and "pytest" in kwargs["excludes"]
    assert kwargs["module_collection_mode"]["torch_geometric"] == "pyz+py"
    exes = _of(calls, "EXE")
    assert [(kw["name"], kw["console"]) for _, kw in exes] == [("concord", True)]
    (collect_args, collect_kwargs), = _of(calls, "COLLECT")
    assert collect_kwargs["name"] == "concord"
    assert not _of(calls, "BUNDLE")


def test_spec_windows_has_a_console_and_a_windowed_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _run_spec(monkeypatch, "win32")
    exes = _of(calls, "EXE")
    assert [(kw["name"], kw["console"]) for _, kw in exes] == [("concord", True), ("concordw", False)]
    (collect_args, _), = _of(calls, "COLLECT")
    assert sum(1 for a in collect_args if getattr(a, "kind", None) == "EXE") == 2


def test_spec_macos_makes_an_app_bundle(monkeypatch: pytest.MonkeyPatch, bundle) -> None:
    monkeypatch.setenv("CONCORD_CODESIGN_IDENTITY", "Developer ID Application: Example (TEAMID)")
    calls = _run_spec(monkeypatch, "darwin")
    (_, exe), = _of(calls, "EXE")
    assert exe["console"] is False
    assert exe["codesign_identity"].startswith("Developer ID")
    assert Path(exe["entitlements_file"]).is_file()
    (_, app), = _of(calls, "BUNDLE")
    assert app["name"] == "Concord.app"
    assert app["version"] == bundle.project_version()


# ------------------------------------------------------------------------ frozen paths


def test_resources_resolve_from_the_source_tree_when_not_frozen(monkeypatch) -> None:
    from app import demo

    monkeypatch.delattr(sys, "frozen", raising=False)
    assert demo.resources_root() == ROOT / "resources"
    assert demo.RESOURCES == ROOT / "resources"
    monkeypatch.setattr(sys, "_MEIPASS", "/elsewhere", raising=False)  # not frozen: ignored
    assert demo.resources_root() == ROOT / "resources"


def test_resources_resolve_into_the_bundle_when_frozen(frozen: Path) -> None:
    from app import demo

    assert demo.resources_root() == frozen / "resources"


def test_frozen_bundle_layout_serves_the_demo_and_migrations(
    bundle: types.ModuleType, frozen: Path
) -> None:
    """The folders the spec lays out are where the application looks for them."""
    from alembic.script import ScriptDirectory

    from app import demo
    from app.storage import engine

    _lay_out(bundle, frozen)
    worklist = demo.demo_worklist(demo.resources_root() / "demo")
    assert len(worklist.studies) == 6
    model_dir = worklist.model_dir
    assert frozen.resolve() in model_dir.parents
    for name in ("config.json", "model.safetensors", "tokenizer"):
        assert (model_dir / name).exists(), name
    for study in worklist.studies:
        for rel in study.files:
            assert (worklist.root / rel).is_file(), rel
    # engine.MIGRATIONS is beside engine.py; frozen, engine.py's __file__ lies in the bundle
    # folder at the same place relative to the package root.
    rel = engine.MIGRATIONS.relative_to(Path(engine.__file__).resolve().parents[2])
    migrations = frozen / rel
    assert (migrations / "env.py").is_file() and (migrations / "script.py.mako").is_file()
    script = ScriptDirectory(str(migrations))
    assert script.get_current_head() == engine.head_revision()


def test_bundle_model_loads(bundle: types.ModuleType, frozen: Path) -> None:
    from app import demo
    from core_model.checkpoint import load_checkpoint

    _lay_out(bundle, frozen)
    model_dir = demo.demo_worklist(demo.resources_root() / "demo").model_dir
    assert frozen.resolve() in model_dir.parents
    assert load_checkpoint(model_dir) is not None


# ------------------------------------------------------------------------ entry point


def test_entry_accepts_the_admin_child_command_form(monkeypatch) -> None:
    from app.admin.commands import concord_command

    entry = _load("concord_entry", INSTALLERS / "concord_entry.py")
    program, args = concord_command(["train", "--config", "tiny"])
    assert entry._arguments(args) == ["train", "--config", "tiny"]
    assert entry._arguments(["-mapp.cli", "eval"]) == ["eval"]
    assert entry._arguments(["--demo", "-m"]) == ["--demo", "-m"]
    seen: list[list[str]] = []
    monkeypatch.setattr("app.cli.main", lambda argv: seen.append(list(argv)) or 7)
    monkeypatch.setattr(sys, "argv", ["concord", "-m", "app.cli", "label", "x.csv"])
    assert entry.main() == 7
    assert seen == [["label", "x.csv"]]


# ------------------------------------------------------------------------ CPU torchvision


SAMPLE = '''
@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return "nms"


@torch.library.register_fake("torchvision::qnms")
def meta_qnms(dets, scores, iou_threshold):
    return "qnms"
'''


def _exec_patched(text: str, has_ops: bool) -> tuple[dict, list[str]]:
    registered: list[str] = []

    def register_fake(name, *args, **kwargs):
        registered.append(name)
        return lambda fn: fn

    torch = types.SimpleNamespace(library=types.SimpleNamespace(register_fake=register_fake))
    torchvision = types.SimpleNamespace(extension=types.SimpleNamespace(_has_ops=lambda: has_ops))
    namespace = {"torch": torch, "torchvision": torchvision}
    exec(compile(text, "_meta_registrations.py", "exec"), namespace)  # noqa: S102
    return namespace, registered


def test_torchvision_patch_guards_the_registrations() -> None:
    tv = _load("concord_torchvision_cpu", INSTALLERS / "torchvision_cpu.py")
    patched, count = tv.patch_source(SAMPLE)
    assert count == 2
    assert tv.patch_source(patched) == (patched, 0)  # running twice changes nothing
    namespace, registered = _exec_patched(patched, has_ops=False)
    assert registered == [] and namespace["meta_nms"](1, 2, 3) == "nms"
    _, registered = _exec_patched(patched, has_ops=True)
    assert registered == ["torchvision::nms", "torchvision::qnms"]
    _, registered = _exec_patched(SAMPLE, has_ops=False)  # the unpatched file always registers
    assert registered == ["torchvision::nms", "torchvision::qnms"]


def test_torchvision_patch_only_removes_cuda_linked_objects(tmp_path: Path) -> None:
    tv = _load("concord_torchvision_cpu", INSTALLERS / "torchvision_cpu.py")
    cuda = tmp_path / "_C.so"
    cuda.write_bytes(b"\x7fELF...libc10.so\0libtorch_cuda.so\0...")
    cpu = tmp_path / "image.so"
    cpu.write_bytes(b"\x7fELF...libc10.so\0libtorch_cpu.so\0...")
    assert tv.needs_cuda_torch(cuda) and not tv.needs_cuda_torch(cpu)


# ------------------------------------------------------------------------ scripts


@pytest.mark.parametrize("script", ["build.sh", "smoke.sh"])
def test_scripts_parse_and_explain_themselves(script: str) -> None:
    path = INSTALLERS / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    shown = subprocess.run(["bash", str(path), "--help"], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    assert f"installers/{script}" in shown and "--variant cpu|gpu" in shown


@pytest.mark.skipif(shutil.which("realpath") is None, reason="needs GNU realpath")
def test_build_refuses_bad_arguments_before_doing_anything(tmp_path: Path) -> None:
    build = INSTALLERS / "build.sh"
    inside = ROOT / "dist-installer-test"
    done = subprocess.run(["bash", str(build), "--out", str(inside)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "inside the repository" in done.stderr
    assert not inside.exists()
    done = subprocess.run(["bash", str(build), "--variant", "tpu", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "cpu or gpu" in done.stderr
    assert not (tmp_path / "o").exists()


def test_readme_documents_every_platform_and_variant() -> None:
    text = (INSTALLERS / "README.md").read_text(encoding="utf-8")
    for needed in ("installers/build.sh", "installers/smoke.sh", "pyinstaller", "concord.spec",
                   "## Windows", "## macOS", "notar", "concordw.exe", "CPU", "GPU"):
        assert needed in text, needed


def test_demo_worklist_points_at_the_bundled_model(bundle: types.ModuleType) -> None:
    data = json.loads((ROOT / "resources/demo/worklist.json").read_text(encoding="utf-8"))
    model = (ROOT / "resources/demo" / data["model"]).resolve()
    bundled = {(ROOT / src).resolve() for src, _ in bundle.data_dirs()}
    assert model in bundled
