"""The deal's team: the owner and the CRM's opportunity team, several members, edited in
the CRM; on a deal received from a partner, both companies' people (issue 20)."""

from __future__ import annotations

from seller import Seller, add_team_member, remove_team_member, team_users

from connector.commands.live import explain_live
from connector.mapping.load import load_mapping
from connector.model import DealDraft
from connector.settings import Settings, load_config

#: a sales-team role each CRM knows (Salesforce's picklist, a seeded connection role)
ROLE = {"salesforce": "Sales Rep", "dynamics": "Sales Team Member"}


def team_emails(referral: dict[str, object]) -> set[str]:
    team = referral.get("team")
    assert isinstance(team, list)
    return {str(m["email"]).lower() for m in team}


def owner_email(seller: Seller, crm_id: str) -> str:
    owner = str(seller.get(crm_id, "owner"))
    (user,) = [u for u in seller.rows("users") if str(u["id"]).lower() == owner.lower()]
    return str(user["email"]).lower()


def opportunity_team(seller: Seller) -> None:
    """The mapping reads the opportunity team (the default mapping sends the owner alone)."""
    seller.edit_mapping("team: {source: owner}", "team: {source: opportunity_team}")


def test_the_opportunity_team_is_the_deals_team_and_follows_its_edits(seller: Seller) -> None:
    opportunity_team(seller)
    world = seller.world
    crm_id = seller.new_deal()
    owner = owner_email(seller, crm_id)
    first, second = team_users(seller, 2, besides=str(seller.get(crm_id, "owner")))
    member = add_team_member(seller, crm_id, first["id"], ROLE[seller.crm])
    world.sync()
    referral = world.referral_of(crm_id)
    assert team_emails(referral) == {owner, first["email"].lower()}
    (sent,) = [m for m in referral["team"] if m["email"].lower() == first["email"].lower()]
    assert (sent["firstName"], sent["lastName"]) == (first["first_name"], first["last_name"])
    # a member added later: only the team changed (the opportunity itself did not)
    add_team_member(seller, crm_id, second["id"], ROLE[seller.crm])
    world.reset_stats()
    world.sync()
    assert world.calls()["core"].get("PATCH", 0) == 1
    assert team_emails(world.referral_of(crm_id)) == {
        owner,
        first["email"].lower(),
        second["email"].lower(),
    }
    # a member removed (seen at the latest when the deal changes next)
    remove_team_member(seller, member)
    seller.edit(crm_id, amount=52000)
    world.sync()
    assert team_emails(world.referral_of(crm_id)) == {owner, second["email"].lower()}
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0, "nothing sent twice"


def test_a_deal_from_a_partner_keeps_both_companies_people(seller: Seller) -> None:
    opportunity_team(seller)
    world = seller.world
    ally = {
        "firstName": "Alex",
        "lastName": "Ally",
        "phoneNumber": "+1 555 0101",
        "email": "alex@ally.example",
    }
    incoming = world.send_incoming("Partner", team=[ally])
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    (colleague,) = team_users(seller, 1, besides=str(seller.get(crm_id, "owner")))
    add_team_member(seller, crm_id, colleague["id"], ROLE[seller.crm])
    seller.accept(crm_id)
    world.sync()
    referral = world.referral(incoming["id"])
    assert referral["status"] == "Active"
    assert team_emails(referral) == {
        "alex@ally.example",
        owner_email(seller, crm_id),
        colleague["email"].lower(),
    }
    world.reset_stats()
    world.sync()
    assert world.calls().get("core", {}).get("PATCH", 0) == 0


def test_explain_shows_the_team_the_next_sync_would_send(seller: Seller) -> None:
    opportunity_team(seller)
    crm_id = seller.new_deal()
    (member,) = team_users(seller, 1, besides=str(seller.get(crm_id, "owner")))
    add_team_member(seller, crm_id, member["id"], ROLE[seller.crm])
    cfg = load_config(seller.world.config_path)
    (conn,) = cfg.connections
    settings = Settings(state_url=seller.world.state_url, config=seller.world.config_path)
    explained = explain_live(conn, settings, load_mapping(conn.mapping), crm_id)
    assert isinstance(explained.result, DealDraft)
    assert member["email"].lower() in {c.email.lower() for c in explained.result.team}
