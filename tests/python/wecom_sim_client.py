"""wechatpy's enterprise WeChatClient driving Siyu's WeCom simulator.

    wecom_sim_client.py BASE_URL CORP_ID SECRET GUIDE

Prints a JSON summary of what the calls returned; any WeChatClientException fails.
"""
import json
import sys

from wechatpy.enterprise import WeChatClient


class SimClient(WeChatClient):
    """The same client, with its API base and token URL pointed at the simulator."""

    def __init__(self, base, corp_id, secret):
        super().__init__(corp_id, secret)
        self.base = base
        self.API_BASE_URL = base + "/cgi-bin/"

    def fetch_access_token(self):
        return self._fetch_access_token(url=self.base + "/cgi-bin/gettoken", params={"corpid": self.corp_id, "corpsecret": self.secret})


def main():
    base, corp_id, secret, guide = sys.argv[1:5]
    client = SimClient(base, corp_id, secret)
    ec = client.external_contact
    out = {}
    out["follow_user"] = ec.get_follow_user_list()["follow_user"]
    way = ec.add_contact_way(type=1, scene=2, state="SH001-poster", user=[guide])
    out["config_id"] = way["config_id"]
    out["contact_way_state"] = ec.get_contact_way(way["config_id"])["contact_way"]["state"]
    out["contacts"] = ec.list(guide)["external_userid"]
    tags = ec.add_corp_tag(group_id=None, group_name="口味", order=None, tags=[{"name": "燕麦奶"}])
    out["tag_group"] = tags["tag_group"]["group_name"]
    out["corp_tags"] = [g["group_name"] for g in ec.get_corp_tag_list()["tag_group"]]
    try:
        ec.get("wm_nobody")
        out["missing_contact_error"] = None
    except Exception as e:  # WeChatClientException carries errcode
        out["missing_contact_error"] = getattr(e, "errcode", str(e))
    sent = client.message.send_text(1000002, [guide, "nobody.here"], "任务提醒：秋季新豆今晚截止")
    out["app_message_invalid"] = sent["invaliduser"]
    try:
        client.message.send_text(42, [guide], "wrong app")
        out["wrong_agent_error"] = None
    except Exception as e:
        out["wrong_agent_error"] = getattr(e, "errcode", str(e))
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
