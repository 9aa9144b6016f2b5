"""Names, places and companies both imitated CRMs seed from (Unicode on purpose)."""

from __future__ import annotations

#: country, ISO alpha-2 code, cities (city, state or province, postal code), company names
COUNTRIES: tuple[tuple[str, str, tuple[tuple[str, str, str], ...], tuple[str, ...]], ...] = (
    ("United States", "US", (("Redmond", "WA", "98052"), ("Austin", "TX", "73301")),
     ("Contoso Ltd", "Fabrikam Inc", "Northwind Traders", "Tailspin Toys", "Litware Inc")),
    ("Germany", "DE", (("München", "BY", "80331"), ("Köln", "NW", "50667")),
     ("Müller GmbH", "Schäfer & Söhne AG", "Großhandel Weiß KG", "Bäckerei Jürgens")),
    ("Japan", "JP", (("東京", "Tokyo", "100-0001"), ("大阪", "Osaka", "530-0001")),
     ("株式会社サンプル", "山田商事株式会社", "富士テック株式会社")),
    ("France", "FR", (("Paris", "IDF", "75001"), ("Lyon", "ARA", "69001")),
     ("Société Générale Démo", "Crème Brûlée SARL", "Élysée Conseil")),
    ("United Kingdom", "GB", (("London", "LND", "EC1A 1BB"), ("Leeds", "WYK", "LS1 4AP")),
     ("Woodgrove Bank plc", "Adventure Works Ltd", "Proseware Holdings")),
    ("Canada", "CA", (("Montréal", "QC", "H2Y 1C6"), ("Toronto", "ON", "M5H 2N2")),
     ("Érable Solutions Inc", "Maple Leaf Logistics", "Coho Winery")),
    ("Australia", "AU", (("Sydney", "NSW", "2000"), ("Perth", "WA", "6000")),
     ("Wide World Importers", "Blue Yonder Airlines", "Alpine Ski House")),
    ("Brazil", "BR", (("São Paulo", "SP", "01000-000"), ("Curitiba", "PR", "80000-000")),
     ("Ação Comércio Ltda", "Indústrias Pão de Açúcar", "Lâmina Digital")),
)  # fmt: skip
FIRST_NAMES = ("Sue", "John", "José", "Zoë", "Renée", "Ngozi", "Wei", "Ingrid", "Søren",
               "Aiko", "Mateus", "Priya", "Liam", "Chloé", "Omar", "Hana")  # fmt: skip
LAST_NAMES = ("Smith", "Doe", "García", "Müller", "Okafor", "Zhang", "Lindqvist", "Østergaard",
              "山田", "Silva", "Sharma", "O'Brien", "Dubois", "Haddad", "Novák")  # fmt: skip
