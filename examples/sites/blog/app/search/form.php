<?php
// Search box, included by the theme layout on every page.
?>
<form class="search" action="index.php" method="get">
  <input type="hidden" name="r" value="search">
  <input type="search" name="q" placeholder="Search" maxlength="200">
  <button type="submit">Search</button>
</form>
