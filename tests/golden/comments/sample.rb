# frozen_string_literal: true
# A Ruby comment

=begin
A block comment
def not_code; end
=end

def restock(items, n)
  s = "# not a comment #{n}" # code
  # a comment
  items.each { |i| i.count += n }
end
