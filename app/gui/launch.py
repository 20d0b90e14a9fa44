"""Starting the application: ``concord``, ``concord --demo``, ``--screenshot FILE``.

First start needs no set-up: the per-user database is created and migrated,
and the person using it is recorded. Who that is comes from authentication,
never from a typed name (:mod:`app.storage.identity`): the operating-system
user on the desktop's SQLite file (the first user of a new database is its
administrator), the person's own database role on a shared PostgreSQL
database (their Concord role comes from the database too). ``--user`` may
only name that identity.  ``--demo`` uses a separate database (``demo.db`` beside
the default one), imports the bundled demo worklist and opens it with the
bundled demo model under a banner saying it is not for clinical use.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

SCREENSHOT_TIMEOUT_S = 180


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("desktop application (when no COMMAND is given)")
    group.add_argument("--demo", action="store_true",
                       help="open the bundled demo worklist (synthetic studies) with the demo model")
    group.add_argument("--screenshot", metavar="FILE.png",
                       help="save the main window to FILE once the first study's image and flags "
                            "are shown, then exit (honours QT_QPA_PLATFORM=offscreen)")
    group.add_argument("--database", metavar="URL",
                       help="database URL (default: settings, $CONCORD_DATABASE_URL, else the "
                            "per-user SQLite file)")
    group.add_argument("--user", help="the signed-in person; only accepted when it names who the "
                                      "database authenticates (the OS user, or your PostgreSQL role)")
    group.add_argument("--model", metavar="DIR", help="check with this model directory instead "
                                                      "of the active one")


def demo_database_url() -> str:
    from app.storage import default_database_path

    return "sqlite:///" + str(Path(default_database_path()).with_name("demo.db"))


def sign_in(storage: Any, username: str) -> Any:
    """Record ``username`` (the first user of a database with no admin becomes its admin).

    On a person's PostgreSQL connection their row exists already, with the role
    their database membership gives; any other name is refused.
    """
    from app.storage import PermissionDenied, Role

    why = storage.identity.refuse_other(username)
    if why is not None:
        raise PermissionDenied(why)
    if storage.identity.enforced:
        storage.set_current_user(username)
        return storage.user(username)
    existing = storage.user(username)
    if existing is None:
        has_admin = any(u.role == Role.ADMIN for u in storage.users())
        storage.ensure_user(username, None if has_admin else Role.ADMIN)
    storage.set_current_user(username)
    return storage.user(username)


def run(args: argparse.Namespace) -> int:
    from PySide6.QtWidgets import QApplication

    from app.storage import Storage, StorageError

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Concord")
    app.setOrganizationName("Concord")
    from app.settings import apply_theme, load_settings

    loaded = load_settings()  # never raises: a broken file gives defaults and a problem line
    settings = loaded.settings
    if loaded.problem:
        print(f"concord: settings: {loaded.problem}", file=sys.stderr)
    apply_theme(app, settings.theme)
    url = args.database or (demo_database_url() if args.demo else None) or settings.database_url_or_none
    try:
        storage = Storage.open(url or None)
    except StorageError as exc:
        print(f"concord: cannot open the database: {exc}", file=sys.stderr)
        _message("Concord cannot start", f"The database could not be opened:\n{exc}")
        return 2
    try:
        username = authenticated_user(storage, args.user or os.environ.get("CONCORD_USER"))
        sign_in(storage, username)
    except StorageError as exc:
        print(f"concord: cannot sign in: {exc}", file=sys.stderr)
        _message("Concord cannot start", f"Signing in failed:\n{exc}")
        storage.close()
        return 2

    model_dir = args.model or settings.model_path or None
    if args.demo:
        from app.demo import DEMO_DIR, DemoError, demo_worklist, load_demo

        try:
            load_demo(storage)
        except (DemoError, StorageError) as exc:
            print(f"concord --demo: {exc}", file=sys.stderr)
            return 2
        if model_dir is None and not _activate_bundled_model(storage):
            model_dir = str(demo_worklist(DEMO_DIR).model_dir)

    from app.gui.window import MainWindow

    window = MainWindow(storage, model_dir=model_dir, demo=args.demo,
                        autosave_s=float(settings.autosave_seconds), settings=settings,
                        settings_problem=loaded.problem, device=settings.reader_device)
    window.show()
    ids = window.worklist.study_ids()
    if ids:
        window.worklist.select_study(ids[0])
    if args.screenshot:
        return _screenshot(app, window, Path(args.screenshot))
    code = app.exec()
    storage.close()
    return int(code)


def _screenshot(app: Any, window: Any, path: Path) -> int:
    from PySide6.QtCore import QTimer

    result = {"code": 1}

    def save() -> None:
        app.processEvents()
        path.parent.mkdir(parents=True, exist_ok=True)
        if window.grab().save(str(path)):
            result["code"] = 0
        else:
            print(f"concord: could not write {path}", file=sys.stderr)
        window.close()
        app.quit()

    def give_up() -> None:
        if result["code"] == 1:
            print(f"concord: the first study was not shown within {SCREENSHOT_TIMEOUT_S} s; "
                  "no screenshot", file=sys.stderr)
            window.close()
            app.quit()

    if not window.worklist.study_ids():
        window._image_shown = window._flags_shown = True
        window._maybe_ready()
    window.ready.connect(lambda: QTimer.singleShot(300, save))
    QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, give_up)
    app.exec()
    window.storage.close()
    return result["code"]


def _activate_bundled_model(storage: Any) -> bool:
    """The demo database's registry holds the bundled model, active (as a department's holds
    its own); False when that cannot be (the window then checks with the bundled folder)."""
    from app.admin.commands import register_bundled_model
    from app.storage import StorageError

    try:
        register_bundled_model(storage, activate_it=storage.active_model() is None)
    except (StorageError, ValueError) as exc:
        print(f"concord --demo: the bundled model is not in the demo registry: {exc}",
              file=sys.stderr)
        return False
    return storage.active_model() is not None


def authenticated_user(storage: Any, requested: str | None) -> str:
    """The person the database authenticates; ``requested`` (``--user``) must name them.

    A PostgreSQL connection as the database owner or a superuser is not a
    person: the application refuses it (connect as your own role).
    """
    from app.storage import PermissionDenied

    identity = storage.identity
    if storage.engine.dialect.name == "postgresql" and not identity.enforced:
        raise PermissionDenied(
            f"connected to the database as {identity.username}, which is not a Concord user "
            "role; connect as your own database role (docs/security.md)")
    if requested and requested != identity.username:
        raise PermissionDenied(
            f"--user {requested} is not who you are signed in as: the database knows you as "
            f"{identity.username} ({identity.source}); Concord signs with that identity only")
    return identity.username


def _message(title: str, text: str) -> None:
    """A dialog for a start-up failure, unless there is a terminal to read the line printed
    on it (or no screen): a script or a terminal user is not left waiting on a window."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" or os.environ.get("CONCORD_NO_DIALOGS"):
        return
    streams = (sys.stdin, sys.stdout, sys.stderr)
    if any(s is not None and hasattr(s, "isatty") and s.isatty() for s in streams):
        return  # started from a terminal: the line printed there says it
    from PySide6.QtWidgets import QMessageBox

    QMessageBox.critical(None, title, text)
