<?php
// Acme Retail theme (agency build): products as a grid instead of a list.
if (!$results) {
    echo '<p class="no-results">No products match ';
    echo $q;
    echo '.</p>';
    return;
}
?>
<div class="product-grid">
<?php foreach ($results as $r): ?>
  <article><h2><?php echo htmlspecialchars($r['title']); ?></h2></article>
<?php endforeach; ?>
</div>
