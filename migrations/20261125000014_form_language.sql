-- The language a signup form speaks (chosen in the form editor). NULL: the visitor's
-- browser decides. A submission's own `language` field still comes first.
ALTER TABLE forms ADD COLUMN language text CHECK (language ~ '^[a-z]{2,3}$');
