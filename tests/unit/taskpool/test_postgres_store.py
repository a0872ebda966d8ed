"""The PostgreSQL store on the server the suite uses: a table an older qtrain made gains the newer columns."""

from __future__ import annotations

from app.taskpool.postgres import SCHEMA, PostgresTaskPool


def test_a_table_without_the_newer_columns_is_brought_up_to_date(postgres_server: str, postgres_schema: str) -> None:
    import psycopg

    older = SCHEMA.replace(
        ",\n    limits TEXT NOT NULL DEFAULT '{}',\n    progress TEXT NOT NULL DEFAULT '{}'"
        ",\n    label TEXT NOT NULL DEFAULT ''",
        "",
    )
    assert "limits" not in older and "label" not in older
    with psycopg.connect(postgres_server, autocommit=True, options=f"-c search_path={postgres_schema}") as conn:
        conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
        for statement in filter(str.strip, older.split(";")):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO tasks (id, pool, hash, spec, status, queue, experiment, priority, max_attempts, delayed,"
            " created_ns, updated_at) VALUES ('t1', 'p', 'h', '{}', 'waiting', 'cpu', 'e', 0, 3, 0, 1, 0)"
        )
    pool = PostgresTaskPool(postgres_server, schema=postgres_schema)
    try:
        old = pool.get("t1")
        assert (old.limits, old.progress, old.label) == ({}, {}, "")
        task, _ = pool.submit("p", {"a": 1}, "h2", limits={"time_limit_s": 9}, label="lgbm seed=1")
        assert pool.get(task.id).label == "lgbm seed=1" and pool.get(task.id).limits == {"time_limit_s": 9.0}
    finally:
        pool.close()
