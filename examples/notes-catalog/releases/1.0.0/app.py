"""acme-notes 1.0.0: lists the notes; `python3 app.py check` is its health check."""
import sqlite3
import sys

db = sqlite3.connect("db/notes.sqlite3")
rows = db.execute("SELECT title FROM notes ORDER BY id").fetchall()
if sys.argv[1:] != ["check"]:
    for (title,) in rows:
        print(title)
