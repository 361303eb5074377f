-- Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d).
-- One database per service; "order" is a reserved word, so every name is quoted.
-- `commerce migrate` (COMMERCE_DATABASE_URL) also creates any that are missing.
CREATE DATABASE "order";
CREATE DATABASE "inventory";
CREATE DATABASE "payment";
CREATE DATABASE "notification";
