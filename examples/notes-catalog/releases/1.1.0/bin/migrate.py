"""Migration of acme-notes 1.1.0: adds notes.pinned. Prints one line per step."""
import sqlite3

db = sqlite3.connect("db/notes.sqlite3")
print("adding notes.pinned", flush=True)
db.execute("ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")
db.commit()
print("done", flush=True)
