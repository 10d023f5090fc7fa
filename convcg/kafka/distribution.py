"""Apache Kafka's jars, fetched once from Maven Central and reused.

``pom.xml`` beside this file pins the broker (``org.apache.kafka:kafka_2.13``) and its log
backend. `ensure_jars` copies them with ``mvn dependency:copy-dependencies`` (checksums
enforced) into an ignored folder and leaves a stamp there naming the pom it came from, so a
second call, or a second setup, fetches nothing. Run as ``python -m convcg.kafka.distribution``
(the setup does) it prints the folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
POM = Path(__file__).with_name("pom.xml")
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
LIBS_ENV = "CONVCG_KAFKA_LIBS"
STAMP = ".convcg-complete"

INSTALL_HINT = ("install OpenJDK {java}+ and Maven (Debian: apt-get install -y openjdk-17-jre-headless maven), "
                "or point convcg at a running broker with KAFKA_BOOTSTRAP=host:port")


class KafkaUnavailable(RuntimeError):
    """The embedded broker cannot run on this machine; the message says what to install."""


def libs_dir() -> Path:
    """Where the jars live: ``$CONVCG_KAFKA_LIBS``, else ``.cache/kafka-<version>/libs`` in the
    checkout this package sits in, else under ``~/.cache/convcg``."""
    if os.environ.get(LIBS_ENV):
        return Path(os.environ[LIBS_ENV])
    checkout = Path(__file__).resolve().parents[2]
    base = checkout / ".cache" if (checkout / "pyproject.toml").exists() else Path.home() / ".cache" / "convcg"
    return base / f"kafka-{KAFKA_VERSION}" / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_present(libs: Path | None = None) -> bool:
    stamp = (libs or libs_dir()) / STAMP
    return stamp.exists() and stamp.read_text().strip() == _pom_digest()


def java_binary() -> str:
    """The ``java`` to run the broker with (``$JAVA_HOME/bin/java``, else PATH's), at least
    version 17; `KafkaUnavailable` with what to install otherwise."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if java is None:
        raise KafkaUnavailable("no Java found for the embedded Apache Kafka broker: " + INSTALL_HINT.format(java=MIN_JAVA))
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise KafkaUnavailable(f"{java} is Java {major or '?'}; Apache Kafka {KAFKA_VERSION} needs Java "
                               f"{MIN_JAVA}+: " + INSTALL_HINT.format(java=MIN_JAVA))
    return java


def ensure_jars(libs: Path | None = None, quiet: bool = True) -> Path:
    """The folder of Kafka's jars, fetched with Maven first if it is not complete yet."""
    libs = libs or libs_dir()
    if jars_present(libs):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(f"Apache Kafka's jars are not in {libs} and there is no Maven to fetch them: "
                               + INSTALL_HINT.format(java=MIN_JAVA))
    if libs.exists():
        shutil.rmtree(libs)
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = libs.with_name(libs.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-B", "-C", *(["-q"] if quiet else []), "-f", str(POM), "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
    done = subprocess.run(cmd, capture_output=quiet, text=True)
    if done.returncode != 0:
        detail = (done.stdout or "")[-3000:] if quiet else ""
        raise KafkaUnavailable(f"fetching Apache Kafka {KAFKA_VERSION}'s jars failed (mvn exit {done.returncode}):\n{detail}")
    staging.rename(libs)
    (libs / STAMP).write_text(_pom_digest() + "\n")
    return libs


def classpath(libs: Path | None = None) -> str:
    return str((libs or ensure_jars()) / "*")


def main() -> None:
    try:
        libs = ensure_jars(quiet="-v" not in sys.argv)
    except KafkaUnavailable as exc:
        sys.exit(f"convcg: {exc}")
    jars = sum(1 for p in libs.iterdir() if p.suffix == ".jar")
    print(f"Apache Kafka {KAFKA_VERSION}: {jars} jars in {libs}")


if __name__ == "__main__":
    main()
