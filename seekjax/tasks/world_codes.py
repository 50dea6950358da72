"""Lookup tables for the world-facts task: currency and language names, name fixes.

countryinfo stores currencies as ISO 4217 codes and languages as ISO 639-1 codes;
questions and facts need English names. Codes missing here are dropped, never shown
raw. The tables were written for this project from general knowledge.
"""
from __future__ import annotations

# ISO 4217 code -> English name. Fund and accounting codes (BOV, CHE, CHW, CLF, USN,
# USS, UYI) are deliberately absent: they are not what people pay with. HRK and CSD are
# absent because the countries listed with them no longer use them.
CURRENCY_NAMES = {
    "AED": "United Arab Emirates dirham", "AFN": "Afghan afghani", "ALL": "Albanian lek",
    "AMD": "Armenian dram", "AOA": "Angolan kwanza", "ARS": "Argentine peso",
    "AUD": "Australian dollar", "AWG": "Aruban florin", "AZN": "Azerbaijani manat",
    "BAM": "Bosnia and Herzegovina convertible mark", "BBD": "Barbadian dollar",
    "BDT": "Bangladeshi taka", "BGN": "Bulgarian lev", "BHD": "Bahraini dinar",
    "BIF": "Burundian franc", "BMD": "Bermudian dollar", "BND": "Brunei dollar",
    "BOB": "Bolivian boliviano", "BRL": "Brazilian real", "BSD": "Bahamian dollar",
    "BTN": "Bhutanese ngultrum", "BWP": "Botswana pula", "BYR": "Belarusian ruble",
    "BZD": "Belize dollar", "CAD": "Canadian dollar", "CDF": "Congolese franc",
    "CHF": "Swiss franc", "CLP": "Chilean peso", "CNY": "Chinese yuan",
    "COP": "Colombian peso", "CRC": "Costa Rican colón", "CUC": "Cuban convertible peso",
    "CUP": "Cuban peso", "CVE": "Cape Verdean escudo", "CZK": "Czech koruna",
    "DJF": "Djiboutian franc", "DKK": "Danish krone", "DOP": "Dominican peso",
    "DZD": "Algerian dinar", "EGP": "Egyptian pound", "ERN": "Eritrean nakfa",
    "ETB": "Ethiopian birr", "EUR": "euro", "FJD": "Fijian dollar",
    "FKP": "Falkland Islands pound", "GBP": "pound sterling", "GEL": "Georgian lari",
    "GHS": "Ghanaian cedi", "GIP": "Gibraltar pound", "GMD": "Gambian dalasi",
    "GNF": "Guinean franc", "GTQ": "Guatemalan quetzal", "GYD": "Guyanese dollar",
    "HKD": "Hong Kong dollar", "HNL": "Honduran lempira", "HTG": "Haitian gourde",
    "HUF": "Hungarian forint", "IDR": "Indonesian rupiah", "ILS": "Israeli new shekel",
    "INR": "Indian rupee", "IQD": "Iraqi dinar", "IRR": "Iranian rial",
    "ISK": "Icelandic króna", "JMD": "Jamaican dollar", "JOD": "Jordanian dinar",
    "JPY": "Japanese yen", "KES": "Kenyan shilling", "KGS": "Kyrgyzstani som",
    "KHR": "Cambodian riel", "KMF": "Comorian franc", "KPW": "North Korean won",
    "KRW": "South Korean won", "KWD": "Kuwaiti dinar", "KYD": "Cayman Islands dollar",
    "KZT": "Kazakhstani tenge", "LAK": "Lao kip", "LBP": "Lebanese pound",
    "LKR": "Sri Lankan rupee", "LRD": "Liberian dollar", "LSL": "Lesotho loti",
    "LYD": "Libyan dinar", "MAD": "Moroccan dirham", "MDL": "Moldovan leu",
    "MGA": "Malagasy ariary", "MKD": "Macedonian denar", "MMK": "Myanmar kyat",
    "MNT": "Mongolian tögrög", "MOP": "Macanese pataca", "MRO": "Mauritanian ouguiya",
    "MUR": "Mauritian rupee", "MVR": "Maldivian rufiyaa", "MWK": "Malawian kwacha",
    "MXN": "Mexican peso", "MYR": "Malaysian ringgit", "MZN": "Mozambican metical",
    "NAD": "Namibian dollar", "NGN": "Nigerian naira", "NIO": "Nicaraguan córdoba",
    "NOK": "Norwegian krone", "NPR": "Nepalese rupee", "NZD": "New Zealand dollar",
    "OMR": "Omani rial", "PAB": "Panamanian balboa", "PEN": "Peruvian sol",
    "PGK": "Papua New Guinean kina", "PHP": "Philippine peso", "PKR": "Pakistani rupee",
    "PLN": "Polish złoty", "PYG": "Paraguayan guaraní", "QAR": "Qatari riyal",
    "RON": "Romanian leu", "RSD": "Serbian dinar", "RUB": "Russian ruble",
    "RWF": "Rwandan franc", "SAR": "Saudi riyal", "SBD": "Solomon Islands dollar",
    "SCR": "Seychellois rupee", "SDG": "Sudanese pound", "SEK": "Swedish krona",
    "SGD": "Singapore dollar", "SHP": "Saint Helena pound", "SLL": "Sierra Leonean leone",
    "SOS": "Somali shilling", "SRD": "Surinamese dollar", "SSP": "South Sudanese pound",
    "STD": "São Tomé and Príncipe dobra", "SVC": "Salvadoran colón", "SYP": "Syrian pound",
    "SZL": "Swazi lilangeni", "THB": "Thai baht", "TJS": "Tajikistani somoni",
    "TMT": "Turkmenistani manat", "TND": "Tunisian dinar", "TOP": "Tongan paʻanga",
    "TRY": "Turkish lira", "TTD": "Trinidad and Tobago dollar", "TWD": "New Taiwan dollar",
    "TZS": "Tanzanian shilling", "UAH": "Ukrainian hryvnia", "UGX": "Ugandan shilling",
    "USD": "United States dollar", "UYU": "Uruguayan peso", "UZS": "Uzbekistani som",
    "VEF": "Venezuelan bolívar", "VND": "Vietnamese đồng", "VUV": "Vanuatu vatu",
    "WST": "Samoan tālā", "XAF": "Central African CFA franc", "XCD": "East Caribbean dollar",
    "XOF": "West African CFA franc", "XPF": "CFP franc", "YER": "Yemeni rial",
    "ZAR": "South African rand", "ZMK": "Zambian kwacha",
}

# Extra accepted answers for a currency: the code now in use where it was renamed,
# and common everyday names.
CURRENCY_EXTRA_ALIASES = {
    "BYR": ("BYN",), "MRO": ("MRU",), "STD": ("STN",), "VEF": ("VES",), "ZMK": ("ZMW",),
    "SLL": ("SLE",), "CNY": ("renminbi", "RMB"), "GBP": ("British pound", "pound"),
    "USD": ("US dollar", "U.S. dollar", "American dollar"), "EUR": ("euros",),
    "CHF": ("franc",), "KRW": ("won",), "ILS": ("shekel",), "INR": ("rupee",),
}

# Unit words shared by many currencies: "dollar" alone does not name the Fijian dollar,
# but "nakfa" alone does name the Eritrean nakfa.
GENERIC_CURRENCY_UNITS = frozenset(
    "dollar franc peso pound dinar rupee shilling riyal rial krone krona ruble won dirham "
    "lira leu manat som kwacha escudo sol yuan mark lev colón real".split())

# ISO 639-1 code (plus two codes countryinfo uses: "cnr", and "rs" for Serbian) -> name.
LANGUAGE_NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "ay": "Aymara", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bi": "Bislama", "bn": "Bengali", "bs": "Bosnian",
    "ca": "Catalan", "ch": "Chamorro", "cnr": "Montenegrin", "cs": "Czech", "da": "Danish",
    "de": "German", "dv": "Dhivehi", "dz": "Dzongkha", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "ff": "Fula", "fi": "Finnish",
    "fj": "Fijian", "fo": "Faroese", "fr": "French", "ga": "Irish", "gn": "Guaraní",
    "gv": "Manx", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole",
    "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kg": "Kongo", "kk": "Kazakh",
    "kl": "Greenlandic", "km": "Khmer", "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz",
    "la": "Latin", "lb": "Luxembourgish", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian",
    "lu": "Luba-Katanga", "lv": "Latvian", "mg": "Malagasy", "mh": "Marshallese",
    "mi": "Māori", "mk": "Macedonian", "mn": "Mongolian", "ms": "Malay", "mt": "Maltese",
    "my": "Burmese", "na": "Nauruan", "nb": "Norwegian Bokmål", "nd": "Northern Ndebele",
    "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian",
    "nr": "Southern Ndebele", "ny": "Chichewa", "oc": "Occitan", "pa": "Punjabi",
    "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua", "rn": "Kirundi",
    "ro": "Romanian", "rs": "Serbian", "ru": "Russian", "rw": "Kinyarwanda", "sg": "Sango",
    "si": "Sinhala", "sk": "Slovak", "sl": "Slovene", "sm": "Samoan", "sn": "Shona",
    "so": "Somali", "sq": "Albanian", "sr": "Serbian", "ss": "Swazi", "st": "Sesotho",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "tg": "Tajik", "th": "Thai",
    "ti": "Tigrinya", "tk": "Turkmen", "tn": "Tswana", "to": "Tongan", "tr": "Turkish",
    "ts": "Tsonga", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "ve": "Venda",
    "vi": "Vietnamese", "xh": "Xhosa", "zh": "Chinese", "zu": "Zulu",
}

# Per-country corrections of language codes countryinfo gets wrong: (alpha3, code) -> name.
LANGUAGE_FIXES = {("ABW", "pa"): "Papiamento"}

LANGUAGE_ALIASES = {
    "Persian": ("Farsi",), "Chinese": ("Mandarin", "Mandarin Chinese"), "Bengali": ("Bangla",),
    "Dhivehi": ("Maldivian",), "Slovene": ("Slovenian",), "Chichewa": ("Chewa", "Nyanja"),
    "Kirundi": ("Rundi",), "Fula": ("Fulani", "Fulfulde"), "Sesotho": ("Sotho",),
    "Swazi": ("Swati", "siSwati"), "Tswana": ("Setswana",), "Greenlandic": ("Kalaallisut",),
    "Burmese": ("Myanmar",), "Haitian Creole": ("Haitian",), "Kyrgyz": ("Kirghiz",),
    "Sinhala": ("Sinhalese",), "Malay": ("Bahasa Melayu",), "Indonesian": ("Bahasa Indonesia",),
    "Norwegian Bokmål": ("Norwegian", "Bokmål"), "Norwegian Nynorsk": ("Norwegian", "Nynorsk"),
    "Kinyarwanda": ("Rwanda",), "Luba-Katanga": ("Kiluba",), "Kongo": ("Kikongo",),
}

# countryinfo entries that are historical or duplicates of another entry.
EXCLUDED_COUNTRIES = frozenset({"Serbia and Montenegro", "Antilles néerlandaises", "Wales",
                                "Scotland", "Palestine, State of", "Burma"})

# Display-name fixes: countryinfo name -> (name used in questions, extra aliases).
COUNTRY_RENAMES = {
    "Holy See (Vatican City State)": ("Vatican City", ("Holy See", "Vatican")),
    "Vatican City State": ("Vatican City", ("Holy See", "Vatican")),
    "Republic of Macedonia": ("North Macedonia", ("Macedonia", "Republic of Macedonia")),
    "Swaziland": ("Eswatini", ("Swaziland",)),
}

COUNTRY_ALIASES = {
    "United States": ("United States of America", "USA", "US", "America"),
    "United Kingdom": ("UK", "Great Britain", "Britain"),
    "Czech Republic": ("Czechia",),
    "Ivory Coast": ("Côte d'Ivoire",),
    "East Timor": ("Timor-Leste",),
    "Cape Verde": ("Cabo Verde",),
    "Republic of the Congo": ("Congo", "Congo-Brazzaville"),
    "Democratic Republic of the Congo": ("DR Congo", "DRC", "Congo-Kinshasa"),
    "Myanmar": ("Burma",),
    "Federated States of Micronesia": ("Micronesia",),
    "South Korea": ("Republic of Korea", "Korea"),
    "North Korea": ("DPRK",),
    "Russia": ("Russian Federation",),
    "Palestine": ("State of Palestine",),
    "The Bahamas": ("Bahamas",),
    "The Gambia": ("Gambia",),
    "Netherlands": ("Holland",),
    "United Arab Emirates": ("UAE",),
    "Laos": ("Lao PDR",),
    "Turkey": ("Türkiye",),
}

# Capital fixes: countryinfo capital -> (name used, extra aliases).
CAPITAL_RENAMES = {"Nur-Sultan": ("Astana", ("Nur-Sultan",))}

CAPITAL_ALIASES = {
    "Kyiv": ("Kiev",), "Washington D.C.": ("Washington", "Washington, D.C."),
    "City of Victoria": ("Victoria",), "City of San Marino": ("San Marino",),
    "Naypyidaw": ("Nay Pyi Taw", "Naypyitaw"), "Saint John's": ("St. John's",),
    "St. George's": ("Saint George's",), "St. Peter Port": ("Saint Peter Port",),
    "Kuwait City": ("Kuwait",), "Hagåtña": ("Agana",), "Papeetē": ("Papeete",),
}
