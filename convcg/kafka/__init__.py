"""The embedded Apache Kafka broker: its pinned jars (`distribution`) and a local KRaft node run
from them (`local`). The harness that chooses between an external broker, testcontainers and
this one is `convcg.broker`."""
