"""What each key of a mapping file means, with an example: the JSON Schema's hover texts.

Editors that speak the YAML language server show a key's ``description`` and its
``examples`` on hover and complete from them. :func:`document` adds both to every
property of every model of the mapping file when pydantic builds the schema
(``connector mappings schema``); a test checks that no key is left without them.
"""

from __future__ import annotations

from typing import Any

from connector.model import FILTER_DOCS

#: model name → key → (description, example)
DOCS: dict[str, dict[str, tuple[str, Any]]] = {
    "MappingFile": {
        "version": ("The mapping file format's version; always 1.", 1),
        "crm": ("Which CRM this mapping reads: salesforce or dynamics.", "salesforce"),
        "select": (
            "Which opportunities take part: a condition on CRM fields, or all/any/not of "
            "conditions. Without it every opportunity is synced.",
            {"field": "Sync_with_Partner_Center__c", "op": "eq", "value": True},
        ),
        "stages": (
            "How the CRM's sales stages become Partner Center's standard stages.",
            {"field": "StageName", "map": {"Prospecting": "Created"}},
        ),
        "fields": (
            "Where each deal value comes from: a CRM field, a constant, or a value table.",
            {"name": {"field": "Name"}, "value": {"field": "Amount"}},
        ),
        "deal_type": (
            "Which CRM fields ask Microsoft for help (co-sell), share the deal with "
            "Microsoft sellers, invite partners or register the deal.",
            {"help_field": "How_can_Microsoft_help__c"},
        ),
        "status_fields": (
            "The CRM fields the connector writes Partner Center's view into (it never "
            "reads them back as deal content).",
            {"referral_id": "Referral_Identifier__c", "status": "CoSell_Status__c"},
        ),
        "inbound": (
            "Whether referrals sent by Microsoft or other partners become CRM "
            "opportunities, and how they start.",
            {"create_opportunities": True, "stage": "Prospecting"},
        ),
        "solution_types": (
            "The type each kind of solution is sent with: Name (a solution of the "
            "Microsoft catalog) or Category (a pre-defined solution name).",
            {"own": "Name", "microsoft": "Category", "third_party": "Name"},
        ),
        "on_record_deleted": (
            "What becomes of the referral of a CRM record that was deleted or purged "
            "(found by the periodic reconciliation): flag opens a dead letter for an "
            "operator and leaves the referral as it is; close_lost closes it as Lost.",
            "flag",
        ),
    },
    "StageMap": {
        "field": (
            "The CRM field holding the stage's label (Salesforce StageName; Dynamics "
            "`stage`, the label the adapter derives).",
            "StageName",
        ),
        "map": (
            "CRM stage label → Created, Qualified, Developed, Proposed, Negotiated, Won or "
            "Lost; or `ignore` to leave records in that stage out of the sync. Accepted "
            "is set only by Partner Center.",
            {"Prospecting": "Created", "Closed Won": "Won", "Internal review": "ignore"},
        ),
        "unmapped": (
            "What happens to a stage map does not name: `reject` holds its records back "
            "(rejected with the stage's name) until it is mapped; `by_probability` places "
            "it by the CRM's default probability for the stage.",
            "by_probability",
        ),
        "won_field": (
            "A CRM field that is true when the deal is won (Salesforce IsWon).",
            "IsWon",
        ),
        "closed_field": (
            "A CRM field that is true when the deal is closed, won or lost (Salesforce IsClosed).",
            "IsClosed",
        ),
    },
    "FieldSource": {
        "field": (
            "The CRM field (API or logical name), or a relationship path to a related "
            "record's field.",
            "Account.Name",
        ),
        "const": ("A fixed value instead of a CRM field.", "USD"),
        "table": (
            "CRM value → the value sent; values not in the table use `default`.",
            {"EMEA": "DE", "Americas": "US"},
        ),
        "default": ("The value when the CRM field is empty or not in `table`.", "USD"),
        "split": (
            "Splits a text field into a list at this separator (solutions).",
            ";",
        ),
    },
    "ContactFields": {
        "first_name": ("The contact's first name.", {"field": "Owner.FirstName"}),
        "last_name": ("The contact's last name.", {"field": "Owner.LastName"}),
        "email": ("The contact's e-mail address.", {"field": "Owner.Email"}),
        "phone": ("The contact's phone number.", {"field": "Owner.Phone"}),
    },
    "DealFields": {
        "team": (
            "Where the deal's team comes from besides the owner (team_member).",
            {"source": "opportunity_team", "roles": ["Sales Rep"]},
        ),
        "microsoft_solutions": (
            "Microsoft's solutions in the deal, several separated by split.",
            {"field": "CoSell_Microsoft_Solutions__c", "split": ";"},
        ),
        "third_party_solutions": (
            "Other partners' solutions in the deal, several separated by split.",
            {"field": "CoSell_Third_Party_Solutions__c", "split": ";"},
        ),
        "name": ("The deal's name.", {"field": "Name"}),
        "value": ("The deal's value (a number, 0 or more).", {"field": "Amount"}),
        "currency": (
            "The deal's currency as an ISO 4217 code.",
            {"field": "CurrencyIsoCode", "default": "USD"},
        ),
        "close_date": ("The estimated close date.", {"field": "CloseDate"}),
        "customer_name": ("The customer's company name.", {"field": "Account.Name"}),
        "customer_country": (
            "The customer's country as an ISO 3166 two-letter code.",
            {"field": "Account.BillingCountryCode"},
        ),
        "customer_city": ("The customer's city.", {"field": "Account.BillingCity"}),
        "customer_state": ("The customer's state or region.", {"field": "Account.BillingState"}),
        "customer_postal_code": (
            "The customer's postal code.",
            {"field": "Account.BillingPostalCode"},
        ),
        "customer_address_line1": (
            "The customer's street address.",
            {"field": "Account.BillingStreet"},
        ),
        "customer_contact": (
            "The customer's contact person (required when Microsoft is asked to help).",
            {"first_name": {"field": "Primary_Contact__r.FirstName"}},
        ),
        "team_member": (
            "The partner's seller on the deal.",
            {"first_name": {"field": "Owner.FirstName"}, "email": {"field": "Owner.Email"}},
        ),
        "solutions": (
            "The partner's solution ids in Partner Center (a list, or text to split).",
            {"field": "CoSell_Solutions__c", "split": ";"},
        ),
        "notes": ("Notes sent with the deal (at most 1,000 characters).", {"field": "Description"}),
        "campaign_id": ("A Microsoft campaign id.", {"field": "CoSell_Campaign_Id__c"}),
    },
    "DealTypeRule": {
        "partner_details": (
            "What each partner invited to a partner-to-partner deal is told, each from a "
            "CRM field (an empty one is the deal's own).",
            {"close_date": "CoSell_Partner_Close_Date__c", "notes": "CoSell_Partner_Notes__c"},
        ),
        "help_field": (
            "The CRM field naming the help asked of Microsoft; a value that maps to an "
            "assistance code makes the deal co-sell.",
            "How_can_Microsoft_help__c",
        ),
        "help_values": (
            "CRM value of help_field → Partner Center assistance code; null means no help.",
            {"None": None, "Proof of Concept or Demo": "ProofOfConceptOrDemo"},
        ),
        "share_field": (
            "A checkbox that shares the deal with Microsoft sellers without asking for help.",
            "Share_with_Microsoft__c",
        ),
        "invite_partner_field": (
            "A field naming partner organization ids to invite (partner to partner).",
            "CoSell_Invite_Partner__c",
        ),
        "partner_split": ("Separates several ids in invite_partner_field.", ";"),
        "register_field": (
            "A checkbox asking to register a won, eligible deal with Microsoft.",
            "CoSell_Register_Deal__c",
        ),
    },
    "StatusFields": {
        "received_notes": (
            "Receives the notes Microsoft and other partners wrote on the deal.",
            "CoSell_Received_Notes__c",
        ),
        "referral_id": ("Receives the referral's id (required).", "Referral_Identifier__c"),
        "referral_link": ("Receives a link to the referral.", "Referral_Link__c"),
        "status": ("Receives the referral's status/substatus.", "CoSell_Status__c"),
        "sync_error": (
            "Receives why the record could not be synced (empty when it could).",
            "CoSell_Sync_Error__c",
        ),
        "microsoft_status": (
            "Receives Microsoft's status on a co-sell deal.",
            "CoSell_Microsoft_Status__c",
        ),
        "expiration": ("Receives when the referral expires.", "CoSell_Expiration__c"),
        "days_to_expiry": ("Receives the days left before it expires.", "CoSell_Days_To_Expiry__c"),
        "registration_eligible": (
            "Receives whether the deal can be registered.",
            "CoSell_Registration_Eligible__c",
        ),
        "registration_status": (
            "Receives the deal registration's status.",
            "CoSell_Registration_Status__c",
        ),
        "direction": ("Receives Outgoing or Incoming.", "CoSell_Direction__c"),
        "last_sync": ("Receives when the connector last wrote the record.", "CoSell_Last_Sync__c"),
    },
    "InboundSettings": {
        "decline_reasons": (
            "Each reason the seller can pick and the text Partner Center receives as the "
            "statusReason (the list is yours: Partner Center documents none).",
            {"Not a fit": "Not a fit", "Other": "Declined for another reason"},
        ),
        "customer": (
            "Whether a new incoming deal is tied to the customer's account and contact.",
            {"account": "match_or_create", "contact": "match_or_create"},
        ),
        "close": (
            "How declined and expired incoming deals are closed lost in the CRM.",
            {"declined": "Closed Lost", "expired": "Closed Lost"},
        ),
        "create_opportunities": (
            "Whether incoming referrals become CRM opportunities.",
            False,
        ),
        "stage": (
            "The CRM stage a new incoming deal starts in (an open stage).",
            "Prospecting",
        ),
        "owner_id": ("The CRM user who owns new incoming deals.", "005000000000001AAA"),
        "record_type_id": (
            "The record type of new incoming deals (Salesforce).",
            "012000000000001AAA",
        ),
        "action_field": (
            "A CRM field where the seller answers an incoming deal (Accept / Decline).",
            "CoSell_Action__c",
        ),
        "decline_reason_field": (
            "A CRM field with the reason sent with a decline.",
            "CoSell_Decline_Reason__c",
        ),
    },
    "SolutionTypes": {
        "own": ("The type your own solutions are sent with.", "Name"),
        "microsoft": ("The type Microsoft's solutions are sent with.", "Category"),
        "third_party": ("The type other partners' solutions are sent with.", "Name"),
    },
    "TeamSource": {
        "source": (
            "Where the deal's team comes from: owner (the owner alone) or opportunity_team "
            "(the owner and the opportunity team).",
            "opportunity_team",
        ),
        "roles": (
            "Only team members with these roles (empty: every member).",
            ["Sales Rep", "Solution Engineer"],
        ),
    },
    "PartnerInvitationFields": {
        "close_date": (
            "The CRM field with the close date the invited partner is told.",
            "CoSell_Partner_Close_Date__c",
        ),
        "value": (
            "The CRM field with the invited partner's share of the value.",
            "CoSell_Partner_Value__c",
        ),
        "currency": ("The CRM field with that value's currency.", "CoSell_Partner_Currency__c"),
        "notes": (
            "The CRM field with the notes for the invited partner.",
            "CoSell_Partner_Notes__c",
        ),
        "solutions": (
            "The CRM field with the solution ids the invited partner brings.",
            "CoSell_Partner_Solutions__c",
        ),
        "split": ("What separates several solution ids in solutions.", ";"),
        "help_field": (
            "The CRM field naming the help asked of the invited partner.",
            "CoSell_Partner_Help__c",
        ),
        "help_values": (
            "Each value of help_field and the assistance code it means (null: no help).",
            {"Proof of Concept or Demo": "ProofOfConceptOrDemo", "None": None},
        ),
    },
    "CustomerSettings": {
        "account": (
            "Tie a new incoming deal to the customer's account: none, match (an existing "
            "one only) or match_or_create.",
            "match_or_create",
        ),
        "contact": (
            "Tie a new incoming deal to the customer's contact (matched by email): none, "
            "match or match_or_create.",
            "match_or_create",
        ),
    },
    "CloseSettings": {
        "declined": (
            "The lost stage (Salesforce) or lost status reason (Dataverse) a declined "
            "incoming deal is closed with; left out, it stays open.",
            "Closed Lost",
        ),
        "expired": (
            "The lost stage or status reason an expired incoming deal is closed with.",
            "Closed Lost",
        ),
        "reason_field": (
            "A CRM field that receives why the deal was closed.",
            "CoSell_Close_Reason__c",
        ),
    },
}
DOCS.update(FILTER_DOCS)


def document(schema: dict[str, Any], model: type) -> None:
    """pydantic's ``json_schema_extra`` hook: a description and an example for each key."""
    docs = DOCS.get(model.__name__, {})
    for name, prop in schema.get("properties", {}).items():
        if name in docs:
            description, example = docs[name]
            prop["description"] = description
            prop["examples"] = [example]
