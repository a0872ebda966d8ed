-- qtrain's task pool (QTRAIN_TASK_STORE in docker/compose.yaml), next to MLflow's database on the same server.
-- The postgres image runs this once, as POSTGRES_USER (who therefore owns it), when the data directory is empty;
-- qtrain creates its tasks table on first use.
CREATE DATABASE qtrain;
