#!/usr/bin/env bash
# Resolves the Apache Kafka $KAFKA_VERSION broker's jars with Maven into the cache (hack/kafka/pom.xml).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need java "install a Java 17+ runtime (Debian: openjdk-17-jre-headless) to run the local Kafka broker"
need mvn "install Maven (Debian: maven) to fetch the Kafka jars"

dest=$WSO_CACHE/kafka-$KAFKA_VERSION
if [ -f "$dest/.complete" ]; then
  log "Kafka $KAFKA_VERSION jars are cached in $dest"
  exit 0
fi
rm -rf "$dest"
mkdir -p "$WSO_CACHE/logs"
run_with_progress "resolve Kafka $KAFKA_VERSION jars with Maven" "$WSO_CACHE/logs/fetch-kafka.log" \
  mvn -B -f "$HACK_DIR/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -Dkafka.version="$KAFKA_VERSION" -Dscala.binary.version="$SCALA_BINARY_VERSION" \
    -DoutputDirectory="$dest/libs"
touch "$dest/.complete"
log "Kafka $KAFKA_VERSION: $(ls "$dest/libs" | wc -l) jars in $dest/libs"
