#!/bin/bash
# Creates anqi-edge's binlog (CDC) account. The mariadb image runs the files
# in /docker-entrypoint-initdb.d once, on the first start with an empty data
# directory, after the root password is set and before the server accepts
# network connections (so the healthcheck only passes once this has run).
#
# The account reads the binlog as a replica does (REPLICATION SLAVE), asks
# for the current position (BINLOG MONITOR, MariaDB's name for REPLICATION
# CLIENT) and reads the table definitions of the AnqiCMS database (SELECT).
# It can change nothing.
set -euo pipefail

: "${ANQI_EDGE_CDC_USER:?set ANQI_EDGE_CDC_USER (the cdc.user anqi-edge logs in as)}"
: "${ANQI_EDGE_CDC_PASSWORD:?set ANQI_EDGE_CDC_PASSWORD (cdc.password)}"
db=${MARIADB_DATABASE:-anqicms}

# Quote for SQL string literals and identifiers.
sql_str() { printf "'%s'" "${1//\'/\'\'}"; }
sql_id() { printf '`%s`' "${1//\`/\`\`}"; }

user=$(sql_str "$ANQI_EDGE_CDC_USER")
mariadb --protocol=socket -uroot -p"${MARIADB_ROOT_PASSWORD}" <<SQL
CREATE USER IF NOT EXISTS ${user}@'%' IDENTIFIED BY $(sql_str "$ANQI_EDGE_CDC_PASSWORD");
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO ${user}@'%';
GRANT SELECT ON $(sql_id "$db").* TO ${user}@'%';
SQL
echo "anqi-edge: CDC account ${ANQI_EDGE_CDC_USER} created (REPLICATION SLAVE, BINLOG MONITOR, SELECT on ${db})"
