"""Parses Prometheus text exposition on standard input with Prometheus's
own Python parser (prometheus_client), and prints what it found as JSON:
one object per metric family with its type, help and samples. A line the
parser refuses ends the script with an error, which fails the test."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = []
    for family in text_string_to_metric_families(text):
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in family.samples
                ],
            }
        )
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
