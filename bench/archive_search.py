"""The archive's search over many products against a plain scan, as a ratio.

Fills a fresh, migrated database (SQLite by default; `--postgres URL` for a PostgreSQL server) with `--products`
catalogue rows (tests.archive_products: real calls and proposals, products spread over kinds, licenses, datasets
and three years), then times each query of a fixed mix three ways: the catalogue's search (one page, its total
and seven facets, as GET /api/archive answers), a page deep in the results through the cursor, and a plain scan
(every product read from the database and filtered, sorted and counted in Python), checking the answers agree.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from service.archive import catalog  # noqa: E402
from service.archive.store import LocalStore  # noqa: E402
from service.datasets.service import ensure_bundled  # noqa: E402
from service.db import make_engine  # noqa: E402
from service.migrations import upgrade  # noqa: E402
from service.models import ArchiveProduct  # noqa: E402
from service.timeutil import utcnow  # noqa: E402
from tests.archive_products import JOB_KINDS, LICENSES, WORDS, fill  # noqa: E402


def queries(session: Session, rng: random.Random) -> list[tuple[str, catalog.Query]]:
    calls = [c for c in session.exec(select(ArchiveProduct.call_id).distinct()).all() if c]
    today = utcnow().date()
    return [
        ("everything, newest first", catalog.Query()),
        ("words", catalog.Query(q=rng.choice(WORDS))),
        ("kind + job kind", catalog.Query(kind="run", job_kind=rng.choice(JOB_KINDS))),
        ("license + call", catalog.Query(license=rng.choice(LICENSES), call_id=rng.choice(calls))),
        ("dataset, files public", catalog.Query(dataset=f"commons-{rng.choice(WORDS)}@2", public=True)),
        ("words + dates", catalog.Query(q=rng.choice(WORDS), since=today - timedelta(days=400),
                                        until=today - timedelta(days=30))),
    ]


def timed(fn, repeats: int) -> tuple[float, object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def plain_scan(session: Session, query: catalog.Query) -> catalog.Page:
    return catalog.scan(list(session.exec(select(ArchiveProduct)).all()), query)


def deep_cursor(session: Session, query: catalog.Query) -> str | None:
    """The cursor of a page 90% of the way down the query's results."""
    found = plain_scan(session, catalog.Query(**{**query.__dict__, "limit": catalog.PAGE_MAX}))
    if found.total < 2:
        return None
    everything = catalog.scan(list(session.exec(select(ArchiveProduct)).all()),
                              catalog.Query(**{**query.__dict__, "limit": found.total}))
    return catalog.encode_cursor(everything.items[int(found.total * 0.9) - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL: a schema of its own is made and dropped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        schema = ""
        if args.postgres:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            with create_engine(args.postgres).begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{args.postgres}?options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
        try:
            upgrade(url)
            engine = make_engine(url)
            with Session(engine) as session:
                ensure_bundled(session, LocalStore(Path(folder) / "archive"))  # what the proposals train on
                session.commit()
                start = time.perf_counter()
                fill(session, args.products, seed=3)
                print(f"{args.products} products on {engine.dialect.name} in {time.perf_counter() - start:.1f} s")
                run(session, args.repeats)
            engine.dispose()
        finally:
            if schema:
                with create_engine(args.postgres).begin() as connection:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def run(session: Session, repeats: int) -> None:
    print(f"{'query':<26} {'found':>7} {'search ms':>10} {'deep page ms':>13} {'plain scan ms':>14} {'ratio':>7}")
    searched, scanned = [], []
    for name, query in queries(session, random.Random(3)):
        search_ms, page = timed(lambda q=query: catalog.search(session, q), repeats)
        scan_ms, plain = timed(lambda q=query: plain_scan(session, q), max(1, repeats // 2))
        agree = (page.total == plain.total and [p.ref for p in page.items] == [p.ref for p in plain.items]
                 and page.facets == plain.facets)
        cursor = deep_cursor(session, query)
        deep_ms = timed(lambda q=query, c=cursor: catalog.search(
            session, catalog.Query(**{**q.__dict__, "after": c}), facets=False), repeats)[0] if cursor else 0.0
        searched.append(search_ms)
        scanned.append(scan_ms)
        print(f"{name:<26} {page.total:>7} {search_ms:>10.1f} {deep_ms:>13.1f} {scan_ms:>14.1f} "
              f"{scan_ms / search_ms:>6.1f}x{'' if agree else '  ANSWERS DIFFER'}")
        if not agree:
            print(f"search and plain scan FAILED to agree on {name}")
    total_search, total_scan = statistics.median(searched), statistics.median(scanned)
    print(f"archive search: {total_search:.1f} ms median per query (page, total and facets), plain scan "
          f"{total_scan:.1f} ms: ratio {total_scan / total_search:.1f}x")


if __name__ == "__main__":
    main()
