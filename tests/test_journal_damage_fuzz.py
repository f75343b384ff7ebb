"""Fuzzing recovery of damaged data directories, built by the real journal.

A few data directories are written once per module by :class:`Journal`
(``fsync="always"``, tiny segments, snapshots and their retention), and
every append they hold was acknowledged. Each example copies one, damages
the copy (bytes flipped, zeroed or overwritten, files cut, extended,
deleted, copied or renamed, headers and snapshots broken, stray files
added), recovers it with :func:`open_journal` and checks the promises of
``docs/journal-format.md``:

a. recovery raises nothing but :class:`CorruptJournal` (naming a file of the
   directory and a byte offset) or an ``OSError`` naming a file;
b. nothing acknowledged and intact before the first damage is lost, and
   nothing is invented: the state is exactly the first ``next_lsn - 1``
   acknowledged records, and the journal goes on from ``next_lsn``;
c. what a crash can leave (damage in the last segment with no valid frame
   of another batch after it) is cut and reported, zeros after a whole
   batch are cut as reserved space; any other damage is refused, or cut
   and reported with ``truncate_corrupt=True`` (a damaged file header, a
   gap or an overlap between segments is refused even then);
d. the records of a damaged snapshot are not lost: if the journal does not
   hold every record from the fallback's LSN + 1 to the damaged snapshot's
   LSN, recovery refuses, naming that snapshot, even with
   ``truncate_corrupt=True``; and a refusal cuts nothing (only zeros after
   a whole batch, and snapshot temp files, may be gone).

The precise tests know what each damage did in terms of the layout (which
frame it hit, which batch that frame is of, which segment is the last), so
:func:`journal_damage.expect` states the exact outcome from the documented
rules, without reading the damaged bytes the way recovery does. The broad
test mixes every kind of damage and checks (a) and (b) with a lower bound
on what must survive. Every run is derandomized: the same examples each
time, about 300 in all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corosm.errors import CorruptJournal
from corosm.io.journal import Journal, open_journal, recover
from corosm.io.journal.format import FRAME_SIZE, HEADER_SIZE, segment_name, snapshot_name
from journal_damage import (
    BOUND,
    SPECS,
    Layout,
    Outcome,
    Records,
    Segment,
    build,
    damaged_copy,
    expect,
    files_of,
)
from journal_helpers import ListMachine

CRASH_ZEROS = 300  # the reserve a crash leaves after the last batch (fsync="always")
NEW = b"after-recovery"
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))  # U+FF10..
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Layout]:
    root = tmp_path_factory.mktemp("layouts")
    built = {}
    for i, (key, spec) in enumerate(SPECS.items()):
        built[key] = build(root / f"layout{i}" / "data", spec)
    # the layouts are what they say they are
    assert len(built["journal only"].segments) >= 4 and not built["journal only"].snapshots
    kept = built["two snapshots kept"]
    assert len(kept.snapshots) == 2 and kept.segments[0].first > 1  # retention ran
    end = built["snapshot at the end"]
    assert max(end.snapshots) == len(end.records)
    return built


# -- damage ---------------------------------------------------------------------------------


def offsets_in(size: int, hot: Sequence[int], body: int) -> st.SearchStrategy[int]:
    """An offset in ``[0, size)``: one of ``hot`` (where frames start), in the frame there,
    or anywhere from ``body`` on; one time in eight before ``body`` (the file header).
    """
    hot = [o for o in hot if o < size]
    parts = [st.integers(body, size - 1)] if body < size else []
    if hot:
        inside = st.sampled_from(hot).flatmap(
            lambda o: st.integers(o, min(size - 1, o + FRAME_SIZE + 8))
        )
        parts += [st.sampled_from(hot), inside]
    main = st.one_of(parts) if parts else st.integers(0, size - 1)
    if not body:
        return main
    fields = [o for o in (0, 8, 12) if o < min(body, size)]  # magic, version, reserved
    header = st.one_of(st.sampled_from(fields), st.integers(0, min(body, size) - 1))
    return st.integers(0, 7).flatmap(lambda k: header if k == 0 else main)


DAMAGES = (
    "flip",  # a few bytes anywhere
    "zero",  # a range zeroed (a lost page)
    "garbage",  # a range overwritten
    "truncate",  # cut anywhere
    "append",  # zeros or garbage after the end
    "zeros from a frame on",  # its later pages lost
    "cut at a frame",  # short by whole records: only the next segment can tell
    "magic byte",
    "version byte",  # 1 is a version we read (with no batch marks), others are refused
    "reserved byte",
    "cut in the header",
)
HEADER_FIELDS = {"magic byte": (0, 8), "version byte": (8, 12), "reserved byte": (12, 16)}


def damage_bytes(
    data: st.DataObject, path: Path, hot: Sequence[int], body: int = 0, kind: str | None = None
) -> int:
    """Damage the file at ``path`` one way (``kind``, else one drawn from :data:`DAMAGES`).

    Returns the first offset changed (or cut). ``hot`` and ``body``: where
    to aim, see :func:`offsets_in`.
    """
    old = path.read_bytes()
    size, new = len(old), bytearray(old)
    starts = [o for o in hot if o < size]
    kind = kind or data.draw(st.sampled_from(DAMAGES), "how")
    if kind in ("zeros from a frame on", "cut at a frame") and starts:
        # often the last records: a file short by whole records looks whole
        at = data.draw(st.one_of(st.just(starts[-1]), st.sampled_from(starts)), "at frame")
        new[at:] = bytes(size - at) if kind.startswith("zeros") else b""
    elif kind in HEADER_FIELDS and size:
        lo, hi = HEADER_FIELDS[kind]
        at = data.draw(st.integers(lo, min(size, hi) - 1) if size > lo else st.just(0), "byte")
        new[at] ^= data.draw(st.integers(1, 255), "xor")
    elif kind == "cut in the header":
        del new[data.draw(st.integers(0, min(size, HEADER_SIZE)), "cut at") :]
    elif kind == "flip" and size:
        for at in data.draw(st.lists(offsets_in(size, hot, body), min_size=1, max_size=3), "at"):
            new[at] ^= data.draw(st.integers(1, 255), "xor")
    elif kind == "truncate" and size:
        del new[data.draw(offsets_in(size, hot, body), "cut at") :]
    elif kind in ("zero", "garbage") and size:
        a = data.draw(offsets_in(size, hot, body), "from")
        ends = [h for h in hot if h > a] + [size]  # up to a frame, or to the end of the file
        b = data.draw(st.one_of(st.integers(a + 1, min(size, a + 80)), st.sampled_from(ends)))
        garbage = st.binary(min_size=b - a, max_size=b - a)
        new[a:b] = bytes(b - a) if kind == "zero" else data.draw(garbage, "garbage")
    else:  # append, or nothing else to do to an empty file
        zeros = data.draw(st.booleans(), "zeros appended")
        extra = st.integers(1, 64).map(bytes) if zeros else st.binary(min_size=1, max_size=64)
        new += data.draw(extra, "appended")
    path.write_bytes(bytes(new))
    common = min(size, len(new))
    return next((i for i in range(common) if new[i] != old[i]), common)


def stray_names(layout: Layout) -> st.SearchStrategy[str]:
    """File names recovery must leave alone: near misses of the journal's own."""
    lsns = st.integers(0, len(layout.records) + 3)
    suffixes = st.sampled_from([".bak", "~", ".tmp", ".damaged", ".LOG", "\n", " ", ".log"])
    return st.one_of(
        st.builds(lambda n, s: segment_name(n) + s, lsns, suffixes),
        st.builds(lambda n, s: snapshot_name(n) + s, lsns, suffixes.filter(lambda s: s != ".tmp")),
        st.builds(lambda n: f"journal-{n}.log", lsns),
        st.builds(lambda n: f"snapshot-{n:019d}.snap", lsns),
        st.builds(lambda n: "x" + segment_name(n), lsns),
        st.builds(lambda n: segment_name(n).translate(FULLWIDTH), lsns),  # other digits
        st.builds(lambda n: snapshot_name(n).translate(FULLWIDTH), lsns),
        st.sampled_from(["notes.txt", "journal-.log", "snapshot-.snap", ".journal.log"]),
    )


def add_strays(data: st.DataObject, directory: Path, layout: Layout) -> dict[str, bytes]:
    """Stray files: leftover snapshot temps (recovery removes them) and foreign names.

    Returns the foreign ones with their contents: they must be left as they are.
    """
    originals = [s.data for s in layout.segments] + list(layout.snapshots.values())
    contents = st.one_of(st.binary(min_size=0, max_size=40), st.sampled_from(originals))
    for lsn in data.draw(st.lists(st.integers(0, len(layout.records) + 3), max_size=2), "temps"):
        (directory / (snapshot_name(lsn) + ".tmp")).write_bytes(data.draw(contents))
    foreign = data.draw(st.dictionaries(stray_names(layout), contents, max_size=3), "strays")
    for name, body in foreign.items():
        (directory / name).write_bytes(body)
    return foreign


def check(
    directory: Path,
    layout: Layout,
    want: Outcome,
    *,
    truncate_corrupt: bool,
    strays: dict[str, bytes],
) -> list[bytes] | None:
    """Recover ``directory`` as :func:`expect` says; then write one more record and recover.

    Returns the recovered state, or None when recovery refused (as it should have).
    """
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    try:
        journal, rec = open_journal(directory, Records(), truncate_corrupt=truncate_corrupt)
    except CorruptJournal as exc:
        assert want.error is not None, f"refused, expected {want}: {exc}"
        name, offset, cuttable = want.error
        assert (exc.path, exc.cuttable) == (str(directory / name), cuttable), exc
        assert offset is None or exc.offset == offset, exc
        assert_nothing_cut(directory, before)
        return None
    n = want.records
    try:
        assert want.error is None, f"recovered ({rec.report}), expected a refusal: {want}"
        report = rec.report
        assert rec.state == list(layout.records[:n]), (len(rec.state), want)
        assert (rec.next_lsn, report.snapshot_lsn) == (n + 1, want.snapshot_lsn)
        torn, dropped = report.torn_tail, report.corruption_dropped
        assert want.torn == (torn and (os.path.basename(torn.path), torn.offset)), report
        assert want.dropped == (
            dropped and (os.path.basename(dropped.path), dropped.offset, dropped.removed_segments)
        ), report
        assert report.damaged_snapshots == tuple(
            str(directory / (name + ".damaged")) for name in want.damaged
        )
        cut = want.torn or (want.dropped and want.dropped[:2])
        if cut and cut[1] == 0 and want.torn:
            assert not (directory / cut[0]).exists()  # unborn: removed
        elif cut:
            assert (directory / cut[0]).stat().st_size == cut[1]
        for name in want.dropped[2] if want.dropped else ():
            assert not (directory / name).exists()
        for name, body in strays.items():
            assert (directory / name).read_bytes() == body, f"stray {name!r} was touched"
        assert not [p for p in os.listdir(directory) if p.endswith(".snap.tmp")]
        journal.start()  # the journal goes on from the next LSN, in a segment of its own
        assert journal.append(NEW, timeout=BOUND) == n + 1
    finally:
        journal.close()
    again = recover(str(directory), Records())
    assert again.state == [*layout.records[:n], NEW]
    assert again.report.torn_tail is None and again.report.corruption_dropped is None
    assert not again.report.damaged_snapshots
    return rec.state


def assert_nothing_cut(directory: Path, before: dict[str, bytes]) -> None:
    """Every file of ``before`` is still there, short of trailing zeros at most (or a temp)."""
    for name, body in before.items():
        if not name.endswith(".tmp"):
            now = (directory / name).read_bytes()
            assert now == body[: len(now)] and not any(body[len(now) :]), f"{name} was cut"


# -- the precise tests ------------------------------------------------------------------------


@pytest.mark.parametrize("first", [*DAMAGES, "deleted"])
@settings(FUZZ, max_examples=9)
@given(data=st.data())
def test_damaged_segments_are_cut_where_a_crash_could_tear_them_else_refused(
    layouts: dict[str, Layout], first: str, data: st.DataObject
) -> None:
    layout = layouts[data.draw(st.sampled_from(sorted(layouts)), "layout")]
    truncate_corrupt = data.draw(st.booleans(), "truncate_corrupt")
    with damaged_copy(layout) as directory:
        copies = damage_segments(data, directory, layout, first)
        strays = add_strays(data, directory, layout)
        segs, snaps = files_of(directory, layout)
        want = expect(layout, segs, snaps, truncate_corrupt, copies)
        check(directory, layout, want, truncate_corrupt=truncate_corrupt, strays=strays)


@pytest.mark.parametrize("first", [*DAMAGES, "deleted"])
@settings(FUZZ, max_examples=5)
@given(data=st.data())
def test_a_damaged_snapshot_is_refused_if_the_journal_ends_before_its_lsn(
    layouts: dict[str, Layout], first: str, data: st.DataObject
) -> None:
    # A snapshot at LSN D is written once records 1..D were acknowledged. With the
    # newest snapshot(s) damaged and the segments damaged too, recovery must rebuild
    # 1..D from the fallback and the journal, or refuse naming the snapshot, before it
    # cuts anything: a torn tail, truncate_corrupt's cut, a segment torn while created.
    layout = layouts[data.draw(st.sampled_from(["two snapshots kept", "snapshot at the end"]))]
    truncate_corrupt = data.draw(st.booleans(), "truncate_corrupt")
    newest_first = sorted(layout.snapshots, reverse=True)
    broken = data.draw(st.one_of(st.just(1), st.integers(1, len(newest_first))), "damaged")
    with damaged_copy(layout) as directory:
        for lsn in newest_first[:broken]:
            damage_bytes(data, directory / snapshot_name(lsn), [16, 24, 32, 36])
        copies = damage_segments(data, directory, layout, first)
        want = expect(layout, *files_of(directory, layout), truncate_corrupt, copies)
        check(directory, layout, want, truncate_corrupt=truncate_corrupt, strays={})


def damage_segments(
    data: st.DataObject, directory: Path, layout: Layout, first: str
) -> frozenset[int]:
    """Damage the segments of ``directory``: ``first`` (a kind of :data:`DAMAGES`, or
    "deleted"), perhaps more, a crash's reserve, a copy, a version 1 header.

    Returns the LSNs in the names of the copies (segments under another name).
    """
    last = layout.segments[-1]
    copies: set[int] = set()
    if data.draw(st.booleans(), "crashed"):  # the reserve a crash leaves after the records
        with open(directory / last.name, "ab") as f:
            f.write(bytes(CRASH_ZEROS))
    if data.draw(st.integers(0, 3), "copied") == 0:  # a segment under another name
        seg = data.draw(st.sampled_from(layout.segments), "copy of")
        names = range(layout.segments[0].first - 1, len(layout.records) + 3)
        to = data.draw(st.sampled_from([n for n in names if n != seg.first]), "to")
        (directory / segment_name(to)).write_bytes(seg.data)
        copies.add(to)
        if data.draw(st.booleans(), "renamed"):
            (directory / seg.name).unlink()
    if data.draw(st.integers(0, 5), "relabelled") == 0:  # as version 1: no batch marks
        seg = data.draw(st.one_of(st.just(last), st.sampled_from(layout.segments)), "v1")
        if seg.first not in copies and (path := directory / seg.name).exists():
            with open(path, "r+b") as segment:
                segment.seek(8)
                segment.write(b"\x01")
    for kind in [first, *data.draw(st.lists(st.sampled_from(DAMAGES), max_size=1), "then")]:
        # the last segment most often: there a crash may tear, elsewhere nothing may
        seg = data.draw(st.one_of(st.just(last), st.sampled_from(layout.segments)), "segment")
        path = directory / seg.name
        if not path.exists() or seg.first in copies:
            continue
        if kind == "deleted":
            path.unlink()
        else:
            damage_bytes(data, path, [f.off for f in seg.frames], HEADER_SIZE, kind)
    return frozenset(copies)


@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_damaged_snapshots_fall_back_to_an_older_one_or_refuse(
    layouts: dict[str, Layout], data: st.DataObject
) -> None:
    layout = layouts[data.draw(st.sampled_from(["two snapshots kept", "snapshot at the end"]))]
    lsns = sorted(layout.snapshots)
    with damaged_copy(layout) as directory:
        for _ in range(data.draw(st.integers(1, 2), "damages")):
            path = directory / snapshot_name(data.draw(st.sampled_from(lsns), "snapshot"))
            how = data.draw(st.sampled_from(["bytes", "delete", "rename"]), "how")
            if not path.exists():
                continue
            if how == "bytes":
                damage_bytes(data, path, [0, 8, 12, 16, 24, 32, 36])
            elif how == "delete":
                path.unlink()
            else:  # perhaps over another snapshot
                to = data.draw(st.integers(0, len(layout.records) + 3), "renamed to")
                path.rename(directory / snapshot_name(to))
        if data.draw(st.integers(0, 3), "a segment deleted too") == 0:
            (directory / data.draw(st.sampled_from([s.name for s in layout.segments]))).unlink()
        strays = add_strays(data, directory, layout)
        want = expect(layout, *files_of(directory, layout), False)
        check(directory, layout, want, truncate_corrupt=False, strays=strays)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_a_crash_in_the_last_batch_is_cut_and_nothing_before_it_is_lost(
    layouts: dict[str, Layout], data: st.DataObject
) -> None:
    # Whatever a crash may leave of the last batch (cut short, its later pages
    # lost, holes of zeros where any of its pages were lost, or garbage): never
    # refused, even without truncate_corrupt, and every batch before it is kept.
    layout = layouts[data.draw(st.sampled_from(sorted(layouts)), "layout")]
    last = layout.segments[-1]
    batch = [f for f in last.frames if f.batch == last.frames[-1].batch]
    lo, hi = batch[0].off, batch[-1].end
    starts = [f.off for f in batch]

    def offset(low: int, high: int, label: str) -> int:  # often where a frame starts or ends
        edges = [e for e in [*starts, hi] if low <= e <= high]
        near = st.sampled_from(edges) if edges else st.nothing()
        return data.draw(st.one_of(st.integers(low, high), near), label)

    torn = bytearray(last.data + bytes(CRASH_ZEROS))  # written over the reserve
    how = data.draw(st.sampled_from(["cut short", "lost from a frame on", "holes"]), "how")
    if how == "cut short":  # appended (interval or never mode): cut anywhere, nothing after it
        del torn[offset(lo, hi - 1, "cut at") :]
    elif how == "lost from a frame on":  # the pages of its later frames never made it
        at = data.draw(st.sampled_from(starts), "lost from")
        torn[at:] = bytes(len(torn) - at)
    else:  # any of its pages lost (zeros), or torn mid-sector (garbage)
        for _ in range(data.draw(st.integers(1, 3), "holes")):
            a = offset(lo, hi - 1, "from")
            b = offset(a + 1, hi, "to")
            garbage = st.binary(min_size=b - a, max_size=b - a)
            torn[a:b] = bytes(b - a) if data.draw(st.booleans(), "zeros") else data.draw(garbage)
    if how != "holes" and data.draw(st.booleans(), "version 1"):  # an older corosm's segment
        torn[8] = 1  # (there, a hole before a valid frame would be corruption)
    with damaged_copy(layout) as directory:
        (directory / last.name).write_bytes(bytes(torn))
        want = expect(layout, *files_of(directory, layout), False)
        state = check(directory, layout, want, truncate_corrupt=False, strays={})
        assert state is not None and len(state) >= batch[0].lsn - 1


# -- the broad test ---------------------------------------------------------------------------


@settings(FUZZ, max_examples=70)
@given(data=st.data())
def test_any_damage_is_refused_clearly_or_loses_nothing_before_it(
    layouts: dict[str, Layout], data: st.DataObject
) -> None:
    layout = layouts[data.draw(st.sampled_from(sorted(layouts)), "layout")]
    truncate_corrupt = data.draw(st.booleans(), "truncate_corrupt")
    top = len(layout.records) + 3
    shaped = {segment_name(g): g for g in range(top + 1)}  # names recovery reads as segments
    names = st.one_of(
        st.sampled_from(sorted(shaped)),
        st.builds(snapshot_name, st.integers(0, top)),
        st.builds(lambda n: snapshot_name(n) + ".tmp", st.integers(0, top)),
        stray_names(layout),
    )
    origin: dict[str, Segment] = {s.name: s for s in layout.segments}
    hits: list[int] = []  # LSNs from which records may be lost

    def lose(name: str) -> None:
        """The file ``name`` is replaced or gone."""
        if name in origin:
            hits.append(origin.pop(name).first)
        if name in shaped:
            hits.append(shaped[name])

    with damaged_copy(layout) as directory:
        for _ in range(data.draw(st.integers(1, 3), "damages")):
            how = data.draw(st.sampled_from(["bytes", "delete", "copy", "rename", "mkdir"]))
            files = sorted(p.name for p in directory.iterdir() if p.is_file())
            name = data.draw(st.sampled_from(files), "file") if files else None
            if how == "mkdir":
                dst = data.draw(names, "directory")
                if not (directory / dst).exists():
                    lose(dst)
                    (directory / dst).mkdir()
            elif name is None:
                continue
            elif how == "bytes":
                seg = origin.get(name)
                hot = [f.off for f in seg.frames] if seg else []
                at = damage_bytes(data, directory / name, hot, HEADER_SIZE if seg else 0)
                hits.append(seg.lsn_at(at) if seg else shaped.get(name, top + 1))
            elif how == "delete":
                lose(name)
                (directory / name).unlink()
            else:
                dst = data.draw(names, "to")
                if dst == name or (directory / dst).is_dir():
                    continue
                lose(dst)
                shutil.copyfile(directory / name, directory / dst)
                if how == "rename":
                    lose(name)
                    (directory / name).unlink()
        recover_any(directory, layout, truncate_corrupt, min(hits, default=top) - 1)


def recover_any(directory: Path, layout: Layout, truncate_corrupt: bool, bound: int) -> None:
    """Recovery refuses with an error naming a file, or keeps at least ``bound`` records."""
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    try:
        journal, rec = open_journal(directory, Records(), truncate_corrupt=truncate_corrupt)
    except CorruptJournal as exc:
        assert Path(exc.path).parent == directory and exc.offset >= 0, exc
        assert_nothing_cut(directory, before)
        return
    except OSError as exc:
        assert exc.filename and Path(exc.filename).parent == directory, exc
        return
    n = rec.next_lsn - 1
    try:
        assert min(bound, len(layout.records)) <= n <= len(layout.records), (n, bound, rec.report)
        assert rec.state == list(layout.records[:n])
        journal.start()  # retention skips a directory named like a covered file (it failed)
        assert journal.append(NEW, timeout=BOUND) == n + 1
    finally:
        journal.close()
    assert recover(str(directory), Records()).state == [*layout.records[:n], NEW]


# -- regressions the fuzzer found -----------------------------------------------------------


@pytest.mark.parametrize(
    "stray",
    [segment_name(1) + "\n", segment_name(1).translate(FULLWIDTH)],
    ids=["trailing newline", "other digits"],
)
def test_a_stray_file_named_almost_like_a_segment_is_left_alone(tmp_path: Path, stray: str) -> None:
    # Names were matched with "^...$" and "\d": "$" matches before a trailing
    # newline and "\d" any Unicode digit, so this 5-byte stray file was read
    # as segment 1, after the real one: recovery took it for a segment torn
    # while being created, removed it, and returned an empty state at LSN 1,
    # and the journal then started a new journal-...1.log over the real one,
    # three acknowledged records gone without an error.
    with Journal(str(tmp_path)) as journal:
        for p in (b"a", b"b", b"c"):
            journal.append(p, timeout=BOUND)
    (tmp_path / stray).write_bytes(b"notes")
    journal, rec = open_journal(tmp_path, ListMachine())
    try:
        assert rec.state == [b"a", b"b", b"c"] and rec.report.torn_tail is None
        journal.start()
        assert journal.append(b"d", timeout=BOUND) == 4
    finally:
        journal.close()
    assert recover(str(tmp_path), ListMachine()).state == [b"a", b"b", b"c", b"d"]
    assert (tmp_path / stray).read_bytes() == b"notes"
