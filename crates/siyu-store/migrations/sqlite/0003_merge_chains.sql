-- A merge repoints profiles that were merged into the one now being merged, so chains
-- stay one step long; without this index that is a scan of every profile per merge.
CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;
