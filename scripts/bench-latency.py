"""Commit-to-delivery latency for scripts/bench.

Each benchmark row carries `created`, the commit time (NOW(6), UTC). This reads the change events
as they arrive and prints "p50_ms p99_ms count" of (arrival - created):
  bench-latency.py stdin                      events on standard input (stream --sink stdout)
  bench-latency.py kafka BROKER TOPIC SECONDS  events read by a Kafka consumer (stream --sink kafka),
                                              until SECONDS passed with nothing new
A Kafka consumer only sees a message after the broker acknowledged it to the producer, so the
Kafka figure is an upper bound of commit-to-acknowledgement.
"""
import datetime
import json
import sys
import time


def latency_ms(value, now):
    created = datetime.datetime.fromisoformat(json.loads(value)["after"]["created"])
    return (now - created.replace(tzinfo=datetime.timezone.utc).timestamp()) * 1000


def from_stdin():
    for line in sys.stdin:
        yield latency_ms(line, time.time())


def from_kafka(broker, topic, idle_secs):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": "binlog-tail-bench",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        # Deliver each message as soon as it is there, not after a fetch wait.
        "fetch.wait.max.ms": 5,
        "fetch.min.bytes": 1,
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    print("ready", file=sys.stderr, flush=True)
    last = time.time()
    while time.time() - last < idle_secs:
        msg = consumer.poll(0.05)
        if msg is None:
            continue
        if msg.error():
            sys.exit(f"consumer: {msg.error()}")
        now = time.time()
        last = now
        yield latency_ms(msg.value(), now)


def main():
    if sys.argv[1] == "stdin":
        lat = list(from_stdin())
    else:
        lat = list(from_kafka(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    print(f"{pick(0.5):.1f} {pick(0.99):.1f} {len(lat)}")


main()
