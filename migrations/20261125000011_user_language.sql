-- The dashboard language each user chose on their account page. NULL until they
-- choose: the dashboard then follows the browser's Accept-Language, else English.
ALTER TABLE users ADD COLUMN language text CHECK (language ~ '^[a-z]{2,3}$');
