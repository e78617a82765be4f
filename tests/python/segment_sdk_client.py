"""Sends events to Siyu through the official Segment Python SDK, unchanged.

Usage: segment_sdk_client.py HOST WRITE_KEY RUN_ID
The SDK is pointed at Siyu with its `host` setting; everything else is its default
behaviour (batching, gzip off, retries, Basic auth with the write key).
"""
import sys

import segment.analytics as analytics


def main() -> int:
    host, write_key, run = sys.argv[1], sys.argv[2], sys.argv[3]
    errors = []
    analytics.write_key = write_key
    analytics.host = host
    analytics.on_error = lambda error, batch: errors.append(str(error))
    analytics.sync_mode = False

    user = f"sdk-user-{run}"
    analytics.identify(user, {"name": "林小满", "city": "Shenzhen", "phone": "13912345678"},
                       anonymous_id=f"sdk-anon-{run}")
    analytics.track(user, "Order Completed", {"order_id": f"o-{run}", "revenue_fen": 3200,
                                              "products": [{"sku": "LT-001", "quantity": 1}]})
    analytics.page(user, category="Menu", name="Coffee", properties={"path": "/menu/coffee"})
    analytics.screen(user, name="Checkout")
    analytics.group(user, f"wr-{run}", {"name": "静安寺店咖啡群"})
    analytics.track(anonymous_id=f"sdk-device-{run}", event="Product Viewed",
                    properties={"sku": "BN-001"},
                    context={"externalIds": [{"id": f"wm-{run}", "type": "external_userid",
                                              "collection": "users", "encoding": "none"}]})
    analytics.alias(f"sdk-device-{run}", user)
    analytics.flush()
    analytics.shutdown()
    if errors:
        print("SDK errors:", errors, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
