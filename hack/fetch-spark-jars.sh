#!/usr/bin/env bash
# Resolves Spark's Kafka connector $SPARK_VERSION and its runtime jars with Maven into the cache
# (hack/spark/pom.xml), keeping only what pyspark's own jars/ folder lacks: Spark with two versions of one
# artifact on its classpath (lz4-java, slf4j-api, scala-library...) fails in ways far from the cause.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need java "install a Java 17+ runtime (Debian: openjdk-17-jre-headless) to run the local Spark cluster"
need mvn "install Maven (Debian: maven) to fetch Spark's Kafka connector jars"

dest=$WSO_CACHE/spark-kafka-$SPARK_VERSION
if [ -f "$dest/.complete" ]; then
  log "Spark $SPARK_VERSION Kafka connector jars are cached in $dest"
  exit 0
fi
# pyspark comes from the project's venv (the `spark` extra of pyproject.toml, installed by `make venv`).
python=${WSO_PYTHON:-$HACK_DIR/../.venv/bin/python}
[ -x "$python" ] || die "$python is missing: run \`make venv\` (pyspark is in the venv's \`spark\` extra)"
pyspark_jars=$("$python" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("pyspark")
print(pathlib.Path(s.origin).parent / "jars" if s and s.origin else "")')
[ -d "$pyspark_jars" ] || die "pyspark is not installed in $python's environment: run \`make venv\`"
pyspark_version=$("$python" -c 'import importlib.metadata as m; print(m.version("pyspark"))')
[ "$pyspark_version" = "$SPARK_VERSION" ] || die "pyspark $pyspark_version is installed, hack/versions.env pins $SPARK_VERSION: run \`make venv\`"

rm -rf "$dest"
mkdir -p "$WSO_CACHE/logs" "$dest"
run_with_progress "resolve Spark $SPARK_VERSION Kafka connector jars with Maven" "$WSO_CACHE/logs/fetch-spark-jars.log" \
  mvn -B -f "$HACK_DIR/spark/pom.xml" dependency:copy-dependencies dependency:list -DincludeScope=runtime \
    -Dspark.version="$SPARK_VERSION" -Dscala.binary.version="$SCALA_BINARY_VERSION" \
    -DoutputDirectory="$dest/libs" -DoutputFile="$dest/artifacts.txt" -DoutputAbsoluteArtifactFilename=false
# artifacts.txt: "   group:artifact:jar[:classifier]:version:scope" per line, after a header.
while IFS=: read -r _ artifact _; do
  artifact=${artifact## }
  if compgen -G "$pyspark_jars/$artifact-[0-9]*.jar" >/dev/null; then
    rm -f "$dest/libs/$artifact"-[0-9]*.jar
  fi
done < <(grep -E '^ +[^ :]+:[^ :]+:' "$dest/artifacts.txt")
touch "$dest/.complete"
log "Spark $SPARK_VERSION Kafka connector: $(ls "$dest/libs" | wc -l) jars in $dest/libs (pyspark has the rest)"
