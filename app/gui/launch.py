"""Starting the application: ``concord``, ``concord --demo``, ``--screenshot FILE``.

First start needs no set-up: the per-user database is created and migrated,
and the signed-in operating-system user is recorded (the first user of a new
database is its administrator; later users are radiologists until an admin
changes their role).  ``--demo`` uses a separate database (``demo.db`` beside
the default one), imports the bundled demo worklist and opens it with the
bundled demo model under a banner saying it is not for clinical use.
"""

from __future__ import annotations

import argparse
import getpass
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
    group.add_argument("--user", help="sign in as USER (default: $CONCORD_USER, else the OS user)")
    group.add_argument("--model", metavar="DIR", help="check with this model directory instead "
                                                      "of the active one")


def demo_database_url() -> str:
    from app.storage import default_database_path

    return "sqlite:///" + str(Path(default_database_path()).with_name("demo.db"))


def sign_in(storage: Any, username: str) -> Any:
    """Record ``username`` (the first user of a database with no admin becomes its admin)."""
    from app.storage import Role

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
    username = args.user or os.environ.get("CONCORD_USER") or _os_user()
    try:
        sign_in(storage, username)
    except StorageError as exc:
        print(f"concord: cannot sign in {username}: {exc}", file=sys.stderr)
        return 2

    model_dir = args.model or settings.model_path or None
    if args.demo:
        from app.demo import DEMO_DIR, DemoError, demo_worklist, load_demo

        try:
            load_demo(storage)
            model_dir = model_dir or str(demo_worklist(DEMO_DIR).model_dir)
        except (DemoError, StorageError) as exc:
            print(f"concord --demo: {exc}", file=sys.stderr)
            return 2

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


def _os_user() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "user"
    cleaned = "".join(c for c in name if c.isalnum() or c in "._-")
    return cleaned or "user"


def _message(title: str, text: str) -> None:
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" or os.environ.get("CONCORD_NO_DIALOGS"):
        return
    from PySide6.QtWidgets import QMessageBox

    QMessageBox.critical(None, title, text)
