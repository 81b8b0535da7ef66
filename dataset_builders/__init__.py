"""`datasets` builders for the facial-behaviour data sets (BP4D, BP4D+, DISFA, RAF-DB, AffectNet, FERPlus) and the
synthetic faces the package ships as its default data. The builders arrive with the data-set issue (#3)."""
