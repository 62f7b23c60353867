"""Deterministic generator of the files suite (v1). Run: python tasks/files/generate.py

Each task starts from a small random file tree (some of /notes, /logs, /docs, /downloads,
/projects, /tmp, /inbox) with unique file contents. A task row holds the tree (``files``,
``dirs``, ``cwd``) and one goal per request (``goals``): golden mutating calls ``ops``, the read
calls ``reads`` an expert makes first, and for questions ``answer`` + ``answer_kind``.

Difficulty 1: one tool call, then a reply (read one file / grep / ls and answer, or one mkdir,
rm, mv, cp or write_file).
Difficulty 2: one request needing several dependent calls (grep then mv; ls, mkdir then several
mv; grep then write the count to a file ...).
Difficulty 3: two or three user requests in one episode; follow-ups refer to the earlier ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentopd.envs.suites import write_splits
from agentopd.tools.vfs import VFS

VERSION = 1
COUNTS = {"train": 300, "test": 100}
SEEDS = {"train": 3001, "test": 4002}
MAX_READ_CHARS = 1800  # a read's output must fit the tool-output limit (2000) with room

NAMES = ["ana", "ben", "chen", "dara", "eli", "fatima", "goran", "hana", "ivo", "jun", "kofi", "lena"]
PROJECTS = ["atlas", "beacon", "comet", "delta", "ember", "falcon", "garnet", "harbor", "iris", "juniper"]
TODO = [
    "buy milk", "call the plumber", "renew passport", "pay the electricity bill",
    "book a dentist appointment", "water the plants", "fix the bike tyre", "email the landlord",
    "back up the laptop", "read chapter 4", "order printer ink", "cancel the gym trial",
    "return library books", "clean the fridge", "plan the team lunch", "update the CV",
    "buy a birthday gift", "pick up dry cleaning", "schedule the car service", "reply to Goran",
    "sort the photo album", "defrost the freezer", "replace the smoke alarm battery",
    "send the tax form", "repair the fence", "practice guitar", "write the blog post",
    "check the train times", "recycle old batteries", "refill the prescription",
]
IDEAS = [
    "a podcast about local history", "a recipe app for leftovers", "a board game about trains",
    "a newsletter for the book club", "a map of quiet cafes", "a plant watering reminder",
    "a bike repair workshop", "a language exchange evening", "a photo walk in the old town",
    "a shared tool library", "a budget tracker for students", "a community garden plan",
]
INFO = ["user {n} logged in", "request {n} served in {ms} ms", "cache warmed with {n} keys", "job {n} finished", "health check passed"]
WARN = ["slow query took {ms} ms", "disk usage at {p} percent", "retrying connection to db-{n}", "queue length {n}"]
ERROR = ["disk full on volume {n}", "timeout contacting db-{n}", "payment {n} failed", "worker {n} crashed", "could not open config-{n}.yaml"]
MAIL_KINDS = [
    ("invoice {id}", "Please find attached invoice {id} for last month."),
    ("order #{id}", "Your order #{id} has shipped and should arrive on Friday."),
    ("ticket {id}", "Support ticket {id} was closed by our team."),
    ("booking {id}", "Your booking {id} for two nights is confirmed."),
    ("refund {id}", "We have processed refund {id} to your card."),
    ("parcel {id}", "Your parcel {id} is waiting at the post office."),
]
EXTS = {
    "pdf": (["report", "manual", "invoice", "paper"], "PDF document"),
    "jpg": (["photo", "scan", "map", "holiday"], "JPEG image"),
    "csv": (["data", "export", "table", "results"], "CSV data"),
    "mp3": (["song", "podcast", "lecture", "track"], "MP3 audio"),
    "txt": (["readme", "notes", "lyrics", "recipe"], "Plain text"),
    "zip": (["backup", "archive", "bundle", "photos"], "ZIP archive"),
}
TOP = ["notes", "logs", "docs", "downloads", "projects", "tmp", "inbox"]
YEARS = [2019, 2020, 2021, 2022, 2023, 2024]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october"]


# ---- the initial tree --------------------------------------------------------------------------
class World:
    """A full random tree; a task keeps the directories it needs plus one or two others."""

    def __init__(self, r: random.Random):
        self.r = r
        self._ids = iter(r.sample(range(1000, 9999), 600))
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()
        self.meta: dict[str, Any] = {}
        for top in TOP:
            self.dirs.add("/" + top)
            getattr(self, "_" + top)()

    def uid(self) -> int:
        return next(self._ids)

    def _notes(self) -> None:
        r = self.r
        self.files["/notes/todo.txt"] = "\n".join(r.sample(TODO, r.randint(4, 8))) + "\n"
        self.files["/notes/ideas.txt"] = "\n".join(r.sample(IDEAS, r.randint(3, 5))) + "\n"
        m, day = r.choice(MONTHS), r.randint(1, 28)
        who = ", ".join(n.capitalize() for n in r.sample(NAMES, 3))
        self.files[f"/notes/meeting-{m}-{day}.txt"] = (
            f"Meeting on {m.capitalize()} {day}\nAttendees: {who}\n"
            f"Decision: ship version {r.randint(2, 9)}.{r.randint(0, 9)}\nNext meeting in {r.randint(2, 5)} weeks\n"
        )

    def _log(self, n_lines: int) -> str:
        r = self.r
        lines, day = [], r.randint(1, 27)
        levels = ["INFO", "WARN", "ERROR"] + [r.choice(["INFO", "INFO", "WARN", "ERROR"]) for _ in range(n_lines - 3)]
        r.shuffle(levels)
        for k, lvl in enumerate(levels):
            msg = r.choice({"INFO": INFO, "WARN": WARN, "ERROR": ERROR}[lvl])
            msg = msg.format(n=self.uid() % 97, ms=r.randint(120, 9000), p=r.randint(80, 99))
            lines.append(f"2024-03-{day:02d} {8 + k // 6:02d}:{(k * 7) % 60:02d}:{r.randint(0, 59):02d} {lvl} {msg}")
        return "\n".join(lines) + "\n"

    def _logs(self) -> None:
        r = self.r
        names = ["app.log", "web.log"] + r.sample(["db.log", "auth.log", "worker.log", "mail.log"], r.randint(0, 2))
        for name in names:
            self.files[f"/logs/{name}"] = self._log(r.randint(6, 14))
        if r.random() < 0.5:
            self.files["/logs/rotation.conf"] = f"keep {r.randint(3, 14)} days\ncompress yes\n"

    def _docs(self) -> None:
        r = self.r
        for year in sorted(r.sample(YEARS, 2)):
            self.files[f"/docs/report-{year}.txt"] = (
                f"Report {year}\nRevenue grew by {r.randint(2, 40)} percent\n"
                f"Headcount: {r.randint(5, 90)}\nNext review in {r.choice(MONTHS).capitalize()}\n"
            )
        rows = r.sample(["rent", "food", "travel", "books", "software", "energy", "phone"], r.randint(3, 5))
        self.files["/docs/budget.csv"] = "item,amount\n" + "".join(f"{x},{r.randint(20, 1500)}\n" for x in rows)
        who = r.choice(NAMES)
        self.files[f"/docs/letter-to-{who}.txt"] = (
            f"Dear {who.capitalize()},\nThank you for your help with the move.\n"
            f"See you on the {r.randint(2, 28)}th.\nKind regards\n"
        )

    def _downloads(self) -> None:
        r = self.r
        for ext in r.sample(sorted(EXTS), 4):
            stems, desc = EXTS[ext]
            for stem in r.sample(stems, r.randint(1, 2)):
                i = self.uid()
                self.files[f"/downloads/{stem}-{i}.{ext}"] = f"{desc} {i}\n"

    def _projects(self) -> None:
        r = self.r
        projects = r.sample(PROJECTS, 2)
        for p in projects:
            owner, i = r.choice(NAMES), self.uid()
            self.files[f"/projects/{p}/README.md"] = f"# {p.capitalize()}\nA small tool, build {i}.\nOwner: {owner}\n"
            self.files[f"/projects/{p}/main.py"] = f'def main():\n    print("{p} {i}")\n\n\nmain()\n'
            self.files[f"/projects/{p}/notes.txt"] = "".join(
                f"TODO {t} (item {self.uid()})\n" for t in r.sample(TODO, r.randint(2, 3))
            )
        p = r.choice(projects)
        f = f"/projects/{p}/{r.choice(['main.py', 'notes.txt', 'README.md'])}"
        phrase = f"FIXME-{self.uid()}"
        lines = self.files[f].splitlines()
        lines.insert(r.randint(1, len(lines)), f"{'# ' if f.endswith('.py') else ''}{phrase} handle empty input")
        self.files[f] = "\n".join(lines) + "\n"
        self.meta["fixme"] = (f, phrase)
        self.meta["projects"] = projects

    def _tmp(self) -> None:
        r = self.r
        temps = [f"{k}-{self.uid()}.tmp" for k in r.sample(["cache", "session", "build", "swap"], r.randint(2, 3))]
        for name in temps:
            self.files[f"/tmp/{name}"] = f"temporary {name.split('-')[0]} token {self.uid()}\n"
        for name in r.sample([f"draft-{self.uid()}.txt", f"upload-{self.uid()}.log", "keep.txt"], r.randint(1, 2)):
            self.files[f"/tmp/{name}"] = f"do not delete: {name}\n"

    def _inbox(self) -> None:
        r = self.r
        kinds = r.sample(MAIL_KINDS, r.randint(3, 5))
        urgent = set(r.sample(range(len(kinds)), 2))
        self.meta["mails"], self.meta["urgent"] = [], []
        for k, (subject, body) in enumerate(kinds):
            i, name = self.uid(), r.choice(NAMES)
            path = f"/inbox/mail-{self.uid()}.txt"
            extra = "This is urgent, please reply today.\n" if k in urgent else ""
            self.files[path] = (
                f"From: {name}@example.com\nSubject: {subject.format(id=i).capitalize()}\n\nHi,\n"
                f"{body.format(id=i)}\n{extra}Best,\n{name.capitalize()}\n"
            )
            self.meta["mails"].append((path, subject.format(id=i)))
            if k in urgent:
                self.meta["urgent"].append(path)


# ---- one task --------------------------------------------------------------------------------
def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _dir(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


class Spec:
    """Builds one task: the kept tree, then requests whose calls are run as they are added."""

    def __init__(self, r: random.Random, world: World, needs: list[str]):
        self.r, self.meta = r, world.meta
        others = [t for t in TOP if t not in needs]
        keep = set(needs) | set(r.sample(others, r.randint(1, 2)))
        self.files = {p: c for p, c in world.files.items() if p.split("/")[1] in keep}
        self.dirs = sorted(d for d in world.dirs if d.split("/")[1] in keep)
        self.vfs = VFS(self.files, self.dirs)
        self.requests: list[str] = []
        self.goals: list[dict[str, Any]] = []

    def ask(self, text: str, reads=(), ops=(), answer: Any = None, kind: str | None = None) -> None:
        for c in reads:
            out = self.vfs.copy().call(c["name"], c["arguments"])
            assert len(out) <= MAX_READ_CHARS, f"read output too long for {c}"
            assert out != "no matches", f"read finds nothing: {c}"
        for c in ops:
            self.vfs.call(c["name"], c["arguments"])
        goal: dict[str, Any] = {"reads": list(reads), "ops": list(ops)}
        if answer is not None:
            goal["answer"], goal["answer_kind"] = answer, kind
        self.requests.append(text)
        self.goals.append(goal)

    # views of the current tree
    def files_in(self, d: str, ext: str | None = None) -> list[str]:
        snap = self.vfs.snapshot()
        return [
            p for p, v in snap.items()
            if v is not None and _dir(p) == d and (ext is None or p.endswith("." + ext))
        ]

    def text(self, path: str) -> str:
        return self.vfs.snapshot()[path]

    def exists(self, path: str) -> bool:
        return path in self.vfs.snapshot()

    def new_dir(self, choices: list[str]) -> str:
        return self.r.choice([d for d in choices if not self.exists(d)])


def _new_name(r: random.Random, path: str) -> str:
    stem, dot, ext = _base(path).rpartition(".")
    suffix = r.choice(["old", "backup", "v2", "final", "2024", "copy"])
    return f"{_dir(path)}/{stem}-{suffix}.{ext}" if dot else f"{path}-{suffix}"


# ---- difficulty 1: one call, then a reply ------------------------------------------------------
def t_first_line(s: Spec) -> None:
    f = s.r.choice(s.files_in("/notes") + s.files_in("/docs"))
    which = s.r.choice(["first", "last"])
    line = _lines(s.text(f))[0 if which == "first" else -1]
    s.ask(
        f"What is the {which} line of {f}? Reply with the line exactly as it is written.",
        reads=[_call("cat", path=f)], answer=line, kind="text",
    )


def t_count_lines(s: Spec) -> None:
    f = s.r.choice(
        [f for f in ("/notes/todo.txt", "/notes/ideas.txt", "/docs/budget.csv") if s.exists(f)]
        + s.files_in("/logs", "log")
    )
    s.ask(
        f"How many lines does the file {f} have?",
        reads=[_call("cat", path=f)], answer=len(_lines(s.text(f))), kind="number",
    )


def t_count_level(s: Spec) -> None:
    f = s.r.choice(s.files_in("/logs", "log"))
    level = s.r.choice(["ERROR", "WARN", "INFO"])
    n = sum(level in ln for ln in _lines(s.text(f)))
    s.ask(
        f"How many lines of {f} contain the word {level}?",
        reads=[_call("grep", pattern=level, path=f)], answer=n, kind="number",
    )


def t_count_entries(s: Spec) -> None:
    d = s.r.choice([d for d in ("/downloads", "/tmp", "/inbox", "/logs", "/notes", "/projects", "/docs") if s.exists(d)])
    n = len(s.vfs.ls(d).splitlines())
    s.ask(
        f"How many entries (files and folders) are directly inside {d}?",
        reads=[_call("ls", path=d)], answer=n, kind="number",
    )


def t_mkdir(s: Spec) -> None:
    p = s.r.choice(s.meta["projects"])
    d = s.new_dir(
        ["/backup", "/archive", f"/archive/{s.r.choice(YEARS)}", "/reports", "/photos", "/music",
         f"/projects/{p}/tests", f"/projects/{p}/docs", f"/shared/{s.r.choice(NAMES)}", "/notes/old"]
    )
    s.ask(f"Create a new directory {d}.", ops=[_call("mkdir", path=d)])


def t_rm_file(s: Spec) -> None:
    f = s.r.choice(s.files_in("/tmp") + s.files_in("/downloads"))
    s.ask(f"Delete the file {f}.", ops=[_call("rm", path=f)])


def t_rename(s: Spec) -> None:
    f = s.r.choice(s.files_in("/notes") + s.files_in("/docs"))
    new = _new_name(s.r, f)
    s.ask(
        f"Rename {f} to {_base(new)}, keeping it in the same folder.",
        ops=[_call("mv", src=f, dst=new)],
    )


def t_copy(s: Spec) -> None:
    f = s.r.choice(s.files_in("/notes") + s.files_in("/docs"))
    new = _new_name(s.r, f)
    s.ask(
        f"Make a copy of {f} named {_base(new)} in the same folder.",
        ops=[_call("cp", src=f, dst=new)],
    )


def t_write_new(s: Spec) -> None:
    name = s.r.choice(["shopping", "reminder", "plan", "quote", "wishlist", "chores"])
    item = s.r.choice(TODO)
    f = f"/notes/{name}.txt"
    s.ask(
        f"Create the file {f} containing exactly one line: {item}",
        ops=[_call("write_file", path=f, content=item + "\n")],
    )


def t_append(s: Spec) -> None:
    item = s.r.choice([t for t in TODO if t not in s.text("/notes/todo.txt")])
    s.ask(
        f"Add '{item}' as a new last line of /notes/todo.txt; keep the existing lines.",
        ops=[_call("write_file", path="/notes/todo.txt", content=item + "\n", append=True)],
    )


def t_move_into(s: Spec) -> None:
    f = s.r.choice(s.files_in("/downloads") + s.files_in("/tmp"))
    d = s.r.choice([d for d in ("/docs", "/notes") if s.exists(d)])
    s.ask(
        f"Move {f} into the existing folder {d}, keeping its file name.",
        ops=[_call("mv", src=f, dst=f"{d}/{_base(f)}")],
    )


def t_find_path(s: Spec) -> None:
    if s.r.random() < 0.5:
        f, phrase = s.meta["fixme"]
        d = "/projects"
    else:
        f, phrase = s.r.choice(s.meta["mails"])
        d = "/inbox"
    s.ask(
        f"Which file under {d} contains the text '{phrase}'? Answer with the file's full path.",
        reads=[_call("grep", pattern=phrase, path=d)], answer=f, kind="path",
    )


def t_rm_dir(s: Spec) -> None:
    s.ask("Delete the directory /tmp together with everything inside it.", ops=[_call("rm", path="/tmp")])


# ---- difficulty 2: several dependent calls in one request --------------------------------------
def t_find_move(s: Spec) -> None:
    f, phrase = s.r.choice(s.meta["mails"])
    dest = s.r.choice(["/finance", "/archive/mail", "/support", "/docs", "/done"])
    ops = [] if s.exists(dest) else [_call("mkdir", path=dest)]
    s.ask(
        f"One of the emails in /inbox mentions '{phrase}'. Move that file into {dest}, keeping "
        f"its file name. Create {dest} first if it does not exist.",
        reads=[_call("grep", pattern=phrase, path="/inbox")],
        ops=ops + [_call("mv", src=f, dst=f"{dest}/{_base(f)}")],
    )


def _two_exts(s: Spec) -> list[str]:
    exts = sorted({p.rsplit(".", 1)[1] for p in s.files_in("/downloads")})
    exts = [e for e in exts if 1 <= len(s.files_in("/downloads", e))]
    pair = s.r.sample(exts, 2)
    while sum(len(s.files_in("/downloads", e)) for e in pair) > 5:
        pair = s.r.sample(exts, 2)
    return pair


FOLDER = {"pdf": "documents", "jpg": "images", "csv": "data", "mp3": "audio", "txt": "text", "zip": "archives"}


def t_organise(s: Spec) -> None:
    e1, e2 = _two_exts(s)
    d1, d2 = f"/downloads/{FOLDER[e1]}", f"/downloads/{FOLDER[e2]}"
    moves = [_call("mv", src=f, dst=f"{d}/{_base(f)}") for e, d in ((e1, d1), (e2, d2)) for f in s.files_in("/downloads", e)]
    s.ask(
        f"Tidy up /downloads: move every .{e1} file into {d1} and every .{e2} file into {d2}. "
        "Create both folders and keep the file names.",
        reads=[_call("ls", path="/downloads")],
        ops=[_call("mkdir", path=d1), _call("mkdir", path=d2)] + moves,
    )


def t_clean_tmp(s: Spec) -> None:
    s.ask(
        "Delete every file in /tmp whose name ends with .tmp and keep all the other files.",
        reads=[_call("ls", path="/tmp")],
        ops=[_call("rm", path=f) for f in s.files_in("/tmp", "tmp")],
    )


def t_report_count(s: Spec) -> None:
    f = s.r.choice(s.files_in("/logs", "log"))
    level = s.r.choice(["ERROR", "WARN"])
    n = sum(level in ln for ln in _lines(s.text(f)))
    dst = f"/reports/{_base(f).split('.')[0]}-{level.lower()}.txt"
    s.ask(
        f"Count the lines of {f} that contain {level} and save just that number in a new file "
        f"{dst}. Create the folder /reports if it does not exist.",
        reads=[_call("grep", pattern=level, path=f)],
        ops=[_call("mkdir", path="/reports"), _call("write_file", path=dst, content=f"{n}\n")],
    )


def t_backup(s: Spec) -> None:
    d = s.r.choice(["/notes", "/docs"])
    b = s.r.choice([f"/backup{d}", f"/archive{d}", f"{d}-backup"])
    s.ask(
        f"Back up {d}: copy every file directly inside {d} into {b}, keeping the file names. "
        f"Create {b} if it does not exist.",
        reads=[_call("ls", path=d)],
        ops=[_call("mkdir", path=b)] + [_call("cp", src=f, dst=f"{b}/{_base(f)}") for f in s.files_in(d)],
    )


def t_find_first_line(s: Spec) -> None:
    f, phrase = s.meta["fixme"]
    s.ask(
        f"One file somewhere under /projects contains the text '{phrase}'. What is the first "
        "line of that file? Reply with the line exactly as it is written.",
        reads=[_call("grep", pattern=phrase, path="/projects"), _call("cat", path=f)],
        answer=_lines(s.text(f))[0], kind="text",
    )


def t_find_delete(s: Spec) -> None:
    f = s.r.choice(s.files_in("/tmp", "tmp"))
    phrase = "token " + s.text(f).split("token ")[1].strip()
    s.ask(
        f"Delete the file in /tmp that contains the text '{phrase}'. Leave the other files alone.",
        reads=[_call("grep", pattern=phrase, path="/tmp")], ops=[_call("rm", path=f)],
    )


def t_move_logs(s: Spec) -> None:
    dest = s.r.choice(["/archive/logs", "/old-logs", "/backup/logs"])
    logs = s.files_in("/logs", "log")
    s.ask(
        f"Move every file whose name ends with .log from /logs into {dest} (create it first), "
        "keeping the file names. How many files did you move?",
        reads=[_call("ls", path="/logs")],
        ops=[_call("mkdir", path=dest)] + [_call("mv", src=f, dst=f"{dest}/{_base(f)}") for f in logs],
        answer=len(logs), kind="number",
    )


def t_which_urgent(s: Spec) -> None:
    s.ask(
        "Which emails in /inbox contain the word 'urgent'? Answer with their file names "
        "separated by commas.",
        reads=[_call("grep", pattern="urgent", path="/inbox")],
        answer=sorted(_base(p) for p in s.meta["urgent"]), kind="names",
    )


# ---- difficulty 3: two or three requests in one episode ----------------------------------------
def c_archive(s: Spec) -> None:
    a = s.new_dir(["/archive", "/old", "/archive/2024", "/backup/notes"])
    f1, f2 = s.r.sample(s.files_in("/notes") + s.files_in("/docs"), 2)
    s.ask(f"Create a directory {a}.", ops=[_call("mkdir", path=a)])
    s.ask(
        f"Move {f1} and {f2} into {a}, keeping their names.",
        ops=[_call("mv", src=f, dst=f"{a}/{_base(f)}") for f in (f1, f2)],
    )
    s.ask(f"How many files are in {a} now?", reads=[_call("ls", path=a)], answer=2, kind="number")


def c_inbox(s: Spec) -> None:
    f, phrase = s.r.choice(s.meta["mails"])
    dest = s.r.choice(["/finance", "/support", "/archive/mail"])
    new = f"{phrase.replace('#', '').replace(' ', '-')}.txt"
    s.ask(
        f"Which file in /inbox mentions '{phrase}'? Answer with the file name only.",
        reads=[_call("grep", pattern=phrase, path="/inbox")], answer=_base(f), kind="name",
    )
    s.ask(
        f"Move that file into {dest}, keeping its name. Create {dest} if it does not exist.",
        ops=[_call("mkdir", path=dest), _call("mv", src=f, dst=f"{dest}/{_base(f)}")],
    )
    s.ask(
        f"Now rename it to {new}, keeping it in {dest}.",
        ops=[_call("mv", src=f"{dest}/{_base(f)}", dst=f"{dest}/{new}")],
    )


def c_copy_append(s: Spec) -> None:
    b = s.r.choice(["/backup", "/archive", "/shared"])
    item = s.r.choice([t for t in TODO if t not in s.text("/notes/todo.txt")])
    copy = f"{b}/todo.txt"
    s.ask(
        f"Copy /notes/todo.txt to {copy}. Create {b} if it does not exist.",
        ops=[_call("mkdir", path=b), _call("cp", src="/notes/todo.txt", dst=copy)],
    )
    s.ask(
        f"Add the line '{item}' at the end of the copy, {copy}. Do not change the original.",
        ops=[_call("write_file", path=copy, content=item + "\n", append=True)],
    )
    s.ask(
        f"How many lines does {copy} have now?",
        reads=[_call("cat", path=copy)], answer=len(_lines(s.text(copy))), kind="number",
    )


def c_write_append(s: Spec) -> None:
    name = s.r.choice(["shopping", "packing", "groceries", "party", "garden"])
    items = s.r.sample(["apples", "bread", "rice", "tea", "soap", "candles", "seeds", "gloves", "maps", "socks"], 4)
    f = f"/notes/{name}.txt"
    s.ask(
        f"Create the file {f} with these three lines, one item per line: {items[0]}, {items[1]}, {items[2]}.",
        ops=[_call("write_file", path=f, content="\n".join(items[:3]) + "\n")],
    )
    s.ask(
        f"Now add {items[3]} as a fourth line at the end of {f}.",
        ops=[_call("write_file", path=f, content=items[3] + "\n", append=True)],
    )


def c_log_report(s: Spec) -> None:
    f = s.r.choice(s.files_in("/logs", "log"))
    level = s.r.choice(["ERROR", "WARN"])
    n = sum(level in ln for ln in _lines(s.text(f)))
    dst = s.r.choice([f"/reports/{level.lower()}-count.txt", f"/notes/{level.lower()}s.txt"])
    s.ask(
        f"How many lines of {f} contain {level}?",
        reads=[_call("grep", pattern=level, path=f)], answer=n, kind="number",
    )
    ops = [] if s.exists(_dir(dst)) else [_call("mkdir", path=_dir(dst))]
    s.ask(
        f"Write that number, and nothing else, into a new file {dst}. Create its folder if needed.",
        ops=ops + [_call("write_file", path=dst, content=f"{n}\n")],
    )


def c_rename_delete(s: Spec) -> None:
    f = s.r.choice(s.files_in("/notes") + s.files_in("/docs"))
    new = _new_name(s.r, f)
    g = s.r.choice(s.files_in("/tmp"))
    s.ask(f"Rename {f} to {_base(new)} in the same folder.", ops=[_call("mv", src=f, dst=new)])
    s.ask(f"Also delete {g}.", ops=[_call("rm", path=g)])
    s.ask(
        "How many entries are left in /tmp?",
        reads=[_call("ls", path="/tmp")], answer=len(s.files_in("/tmp")), kind="number",
    )


def c_organise_count(s: Spec) -> None:
    ext = s.r.choice(sorted({p.rsplit(".", 1)[1] for p in s.files_in("/downloads")}))
    dest = s.r.choice([f"/{FOLDER[ext]}", f"/media/{FOLDER[ext]}", f"/downloads/{FOLDER[ext]}"])
    files = s.files_in("/downloads", ext)
    s.ask(
        f"Move every .{ext} file in /downloads into {dest}, creating {dest} first; keep the names.",
        reads=[_call("ls", path="/downloads")],
        ops=[_call("mkdir", path=dest)] + [_call("mv", src=f, dst=f"{dest}/{_base(f)}") for f in files],
    )
    s.ask(
        f"How many files are in {dest} now?",
        reads=[_call("ls", path=dest)], answer=len(files), kind="number",
    )


def c_find_copy(s: Spec) -> None:
    f, phrase = s.meta["fixme"]
    b = s.r.choice(["/review", "/backup/code", "/shared"])
    s.ask(
        f"Which file under /projects contains '{phrase}'? Answer with its full path.",
        reads=[_call("grep", pattern=phrase, path="/projects")], answer=f, kind="path",
    )
    s.ask(
        f"Copy that file into {b}, keeping its name. Create {b} if it does not exist.",
        ops=[_call("mkdir", path=b), _call("cp", src=f, dst=f"{b}/{_base(f)}")],
    )


TemplateFn = Callable[[Spec], None]
TEMPLATES: dict[int, list[tuple[TemplateFn, list[str]]]] = {
    1: [
        (t_first_line, ["notes"]), (t_count_lines, ["logs"]),
        (t_count_level, ["logs"]), (t_count_entries, []),
        (t_mkdir, ["projects"]), (t_rm_file, ["tmp"]), (t_rename, ["notes"]),
        (t_copy, ["docs"]), (t_write_new, ["notes"]), (t_append, ["notes"]),
        (t_move_into, ["downloads", "notes"]), (t_find_path, ["projects", "inbox"]),
        (t_rm_dir, ["tmp"]),
    ],
    2: [
        (t_find_move, ["inbox"]), (t_organise, ["downloads"]), (t_clean_tmp, ["tmp"]),
        (t_report_count, ["logs"]), (t_backup, ["notes", "docs"]), (t_find_first_line, ["projects"]),
        (t_find_delete, ["tmp"]), (t_move_logs, ["logs"]), (t_which_urgent, ["inbox"]),
    ],
    3: [
        (c_archive, ["notes"]), (c_inbox, ["inbox"]), (c_copy_append, ["notes"]),
        (c_write_append, ["notes"]), (c_log_report, ["logs"]), (c_rename_delete, ["notes", "tmp"]),
        (c_organise_count, ["downloads"]), (c_find_copy, ["projects"]),
    ],
}


def make_task(r: random.Random, split: str, idx: int) -> dict:
    difficulty = r.choices([1, 2, 3], weights=[35, 35, 30])[0]
    fn, needs = r.choice(TEMPLATES[difficulty])
    world = World(r)
    spec = Spec(r, world, needs)
    fn(spec)
    return {
        "id": f"files-v{VERSION}-{split}-{idx:04d}",
        "family": "files",
        "split": split,
        "version": VERSION,
        "difficulty": difficulty,
        "template": fn.__name__,
        "requests": spec.requests,
        "files": spec.files,
        "dirs": spec.dirs,
        "cwd": "/",
        "goals": spec.goals,
    }


def task_key(task: dict) -> str:
    """Two tasks are the same when their requests and initial trees are."""
    return json.dumps([task["requests"], task["files"], task["dirs"]], sort_keys=True)


def generate(split: str) -> list[dict]:
    r = random.Random(SEEDS[split])
    rows: list[dict] = []
    seen: set[str] = set()
    if split == "test":  # keep test tasks out of train
        seen = {task_key(t) for t in generate("train")}
    while len(rows) < COUNTS[split]:
        task = make_task(r, split, len(rows))
        key = task_key(task)
        if key in seen:
            continue
        seen.add(key)
        rows.append(task)
    return rows


if __name__ == "__main__":
    write_splits(Path(__file__).parent / f"v{VERSION}", generate, COUNTS)
