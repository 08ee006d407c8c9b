-- Feast's SQL registry gets a database of its own beside Airflow's metadata (POSTGRES_DB).
-- Run once, by the postgres image, when its volume is first created.
CREATE DATABASE feast;
