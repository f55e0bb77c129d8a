"""acme-notes 1.1.0: lists the notes, pinned first; `python3 app.py check` is its health check."""
import sqlite3
import sys

db = sqlite3.connect("db/notes.sqlite3")
rows = db.execute("SELECT title, pinned FROM notes ORDER BY pinned DESC, id").fetchall()
if sys.argv[1:] != ["check"]:
    for title, pinned in rows:
        print(("* " if pinned else "  ") + title)
