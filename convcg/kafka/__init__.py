"""Kafka for every component: the broker harness (`broker`: an external broker, testcontainers or
the embedded Apache Kafka of `distribution` and `local`), `convcg broker` (`broker_cli`), the one
Kafka settings block (`settings`) and plain producer, consumer and admin helpers (`io`)."""
